"""remove_identity: ops that always return their input unchanged (`identity`) are removed.

Decided by the op definition's `passes_through == "always"`. Readers of the node's output read its input instead;
a graph output that was the identity's result becomes its input (the output keeps its name, which lives in
`graph.outputs`, so exporters and callers see no difference).
"""

from __future__ import annotations

from .base import Pass, PassResult, Program
from .remove_dropout import bypass


class RemoveIdentity(Pass):
    name = "remove_identity"
    summary = "remove identity ops"

    def run(self, program: Program) -> PassResult:
        return bypass(program, ("always",), PassResult(), "identities removed")
