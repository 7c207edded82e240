"""A layered (Sugiyama-style) layout of a display model with nested, collapsible groups.

    lay = layout(model, expanded={"g0", "g3"})     # ids of the expanded groups
    lay.boxes["n5"], lay.clusters["g0"], lay.routes

Each expanded group is laid out on its own, bottom-up, and then placed in its parent as one box (a compound layout
by recursion). Inside one group ("cluster") the classic steps run on its children:

1. Ranks: longest path from the top, in graph order (an edge that would go backwards, which only an optimizer can
   create between groups, is left out of the ranking and drawn straight).
2. Ports: a value that enters the group from outside gets an entry port on rank 0, one that leaves gets an exit
   port on the last rank, so edges cross the border at one place per value and run inside like any other edge.
3. Long edges get a dummy node on every rank they pass.
4. Order within ranks: barycenter sweeps down and up, keeping the order with the fewest crossings.
5. x: alternate sweeps move every box towards the mean x of its neighbours on the rank before (down) or after
   (up), then pack the rank with the least weighted squared movement (isotonic regression by pool adjacent
   violators), so boxes never overlap. Boxes on the longest paths weigh most, dummy nodes and side branches (an
   auxiliary classifier) little, so the main line comes out straight and shortcuts bend around it. A group with
   one entry and one exit puts the entry right above the exit, so a chain of blocks does not drift sideways.
   y: each rank is as tall as its tallest box.

The viewer (assets/layout.js) runs the same steps in the same order on the same numbers from `VizModel.to_json`,
so the browser's re-layout after a click matches what Python draws for the static SVG and the HTML's first view
(tests/viz compares the two with node.js where it is installed). That is why this module works on plain dicts and
lists rather than networkx graphs: each line has a twin in the JS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from .model import VizModel

__all__ = ["Box", "Route", "Layout", "layout", "GAP_X", "RANK_GAP", "PAD", "HEADER"]

GAP_X = 18  # between neighbouring boxes on a rank
DUMMY_GAP = 12  # next to a dummy node or a port
RANK_GAP = 30  # between ranks
PORT_GAP = 18  # between a group's border and its first or last rank
PAD = 12  # inside a group's border
HEADER = 22  # a group's title bar
MARGIN = 16  # around the whole drawing
ORDER_SWEEPS = 8
PLACE_SWEEPS = 7  # odd, so the last sweep goes down and children line up under their parents
SPREAD = 14  # between the ends of edges converging on one box


@dataclass
class Box:
    """A rectangle, top-left corner and size, in the drawing's coordinates."""

    x: float
    y: float
    w: float
    h: float

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class Route:
    """One drawn edge segment: within one cluster, from a box (or an entry port on the cluster's top border) to a
    box (or an exit port on its bottom border). `arrow` is false where it goes on inside an expanded group."""

    value: int
    points: list[tuple[float, float]]
    arrow: bool
    src: str
    dst: str


@dataclass
class Layout:
    width: float
    height: float
    boxes: dict[str, Box] = field(default_factory=dict)  # visible leaves and collapsed groups
    clusters: dict[str, Box] = field(default_factory=dict)  # expanded groups
    routes: list[Route] = field(default_factory=list)
    ranks: dict[str, tuple[str, int]] = field(default_factory=dict)  # item -> (its cluster, its rank there)
    back_edges: int = 0


def _r2(v: float) -> float:
    """Round to 1/100 the way JS's Math.round(v * 100) / 100 does (halves up)."""
    return math.floor(v * 100 + 0.5) / 100


@dataclass
class _Cluster:
    w: float
    h: float
    kids: list[str]
    pos: dict[str, tuple[float, float]]
    size: dict[str, tuple[float, float]]
    rank: dict[str, int]
    in_x: dict[int, float]
    out_x: dict[int, float]
    routes: list[Route]
    sub: dict[str, "_Cluster"]
    back: int


def layout(model: VizModel, expanded: Iterable[str]) -> Layout:
    """Positions of every visible box and group and the routes of the edges, with the groups in `expanded` open
    (a group inside a collapsed one stays hidden whatever `expanded` says)."""
    open_ = set(expanded)
    chains = _chains(model)
    local = _local_edges(model, open_, chains)

    def children(cid: str) -> list[str]:
        return model.roots if cid == "" else model.by_id[cid].children  # type: ignore[union-attr]

    def lay(cid: str) -> _Cluster:
        kids = children(cid)
        sub = {c: lay(c) for c in kids if c in open_}
        size = {c: ((sub[c].w, sub[c].h) if c in sub else (model.by_id[c].w, model.by_id[c].h)) for c in kids}
        header_w = model.by_id[cid].header_w if cid else 0  # type: ignore[union-attr]
        return _lay_cluster(kids, size, sub, local.get(cid, []), bool(cid), header_w)

    root = lay("")
    out = Layout(_r2(root.w), _r2(root.h))

    def place(cl: _Cluster, cid: str, ox: float, oy: float) -> None:
        out.back_edges += cl.back
        for c in cl.kids:
            x, y = cl.pos[c]
            w, h = cl.size[c]
            box = Box(_r2(ox + x - w / 2), _r2(oy + y - h / 2), w, h)
            out.ranks[c] = (cid, cl.rank[c])
            if c in cl.sub:
                out.clusters[c] = box
                place(cl.sub[c], c, ox + x - w / 2, oy + y - h / 2)
            else:
                out.boxes[c] = box
        for r in cl.routes:
            out.routes.append(Route(r.value, [(_r2(ox + px), _r2(oy + py)) for px, py in r.points], r.arrow,
                                    r.src, r.dst))

    place(root, "", 0.0, 0.0)
    return out


def _chains(model: VizModel) -> dict[str, list[str]]:
    """Item id -> the ids of the groups that hold it, outermost first."""
    chains: dict[str, list[str]] = {}
    for g in model.groups:  # a parent is created before its children, so its chain is known
        chains[g.id] = (chains[g.parent] + [g.parent]) if g.parent else []
    for leaf in model.leaves:
        chains[leaf.id] = (chains[leaf.group] + [leaf.group]) if leaf.group else []
    return chains


def _local_edges(model: VizModel, open_: set[str], chains: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Each edge of the model cut into its pieces per cluster: (src, dst, value, arrow) where src and dst are
    children of the cluster or its ports "in:V" / "out:V"."""
    def visible(leaf: str) -> str:
        for g in chains[leaf]:
            if g not in open_:
                return g
        return leaf

    local: dict[str, list[tuple]] = {}
    seen: set[tuple] = set()

    def add(cid: str, src: str, dst: str, value: int, arrow: bool) -> None:
        key = (cid, src, dst, value)
        if key not in seen:
            seen.add(key)
            local.setdefault(cid, []).append((src, dst, value, arrow))

    for e in model.edges:
        s, d = visible(e.src), visible(e.dst)
        if s == d:
            continue
        ps, pd = chains[s] + [s], chains[d] + [d]
        k = 0
        while ps[k] == pd[k]:
            k += 1
        add(ps[k - 1] if k > 0 else "", ps[k], pd[k], e.value, pd[k] == d)
        for j in range(k + 1, len(ps)):
            add(ps[j - 1], ps[j], f"out:{e.value}", e.value, False)
        for j in range(k + 1, len(pd)):
            add(pd[j - 1], f"in:{e.value}", pd[j], e.value, pd[j] == d)
    return local


def _lay_cluster(kids: list[str], size: dict[str, tuple[float, float]], sub: dict[str, _Cluster],
                 edges: list[tuple], is_group: bool, header_w: float) -> _Cluster:
    key = {c: i for i, c in enumerate(kids)}
    ins: list[int] = []
    outs: list[int] = []
    for src, dst, v, _ in edges:
        if src.startswith("in:") and v not in ins:
            ins.append(v)
        if dst.startswith("out:") and v not in outs:
            outs.append(v)

    # 1. ranks: longest path in graph order; backward edges are drawn but not ranked
    rank: dict[str, int] = {f"in:{v}": 0 for v in ins}
    preds: dict[str, list[str]] = {c: [] for c in kids}
    kept, back = [], []
    for e in edges:
        src, dst = e[0], e[1]
        if src.startswith("in:") or dst.startswith("out:") or key[src] < key[dst]:
            kept.append(e)
            if dst in preds:
                preds[dst].append(src)
        else:
            back.append(e)
    base = 1 if ins else 0
    for c in kids:
        rank[c] = max([base] + [rank[u] + 1 for u in preds[c]])
    last = max(rank[c] for c in kids) + 1
    for v in outs:
        rank[f"out:{v}"] = last
    n_ranks = last + 1 if outs else last

    # 2-3. the layered graph: ports, children and a dummy node per rank that a long edge passes
    width: dict[str, float] = {n: 0.0 for n in rank}
    height: dict[str, float] = {n: 0.0 for n in rank}
    for c in kids:
        width[c], height[c] = size[c]
    layers: list[list[str]] = [[] for _ in range(n_ranks)]
    layers[0].extend(f"in:{v}" for v in ins)
    for c in kids:
        layers[rank[c]].append(c)
    up: dict[str, list[tuple[str, float, float]]] = {n: [] for n in rank}
    down: dict[str, list[tuple[str, float, float]]] = {n: [] for n in rank}
    chains: list[list[str]] = []
    for k, (src, dst, v, _) in enumerate(kept):
        chain = [src]
        for r in range(rank[src] + 1, rank[dst]):
            d = f"d{k}:{r}"
            rank[d], width[d], height[d], up[d], down[d] = r, 0.0, 0.0, [], []
            layers[r].append(d)
            chain.append(d)
        chain.append(dst)
        chains.append(chain)
        off_src = sub[src].out_x[v] - sub[src].w / 2 if src in sub else 0.0
        off_dst = sub[dst].in_x[v] - sub[dst].w / 2 if dst in sub else 0.0
        for i in range(len(chain) - 1):
            a, b = chain[i], chain[i + 1]
            oa = off_src if i == 0 else 0.0
            ob = off_dst if i == len(chain) - 2 else 0.0
            down[a].append((b, oa, ob))
            up[b].append((a, oa, ob))
    layers[n_ranks - 1].extend(f"out:{v}" for v in outs)

    # 4. order within ranks
    pos: dict[str, int] = {}
    for layer in layers:
        for i, n in enumerate(layer):
            pos[n] = i

    def crossings() -> int:
        total = 0
        for r in range(n_ranks - 1):
            pairs = [(pos[a], pos[b]) for a in layers[r] for b, _, _ in down[a]]
            for i in range(len(pairs)):
                for j in range(i + 1, len(pairs)):
                    if (pairs[i][0] - pairs[j][0]) * (pairs[i][1] - pairs[j][1]) < 0:
                        total += 1
        return total

    def reorder(r: int, nbrs: dict[str, list[tuple[str, float, float]]]) -> None:
        bary = {}
        for n in layers[r]:
            ms = nbrs[n]
            bary[n] = sum(pos[m] for m, _, _ in ms) / len(ms) if ms else pos[n]
        layers[r].sort(key=lambda n: (bary[n], pos[n]))
        for i, n in enumerate(layers[r]):
            pos[n] = i

    best, best_c = [list(layer) for layer in layers], crossings()
    for it in range(ORDER_SWEEPS):
        if best_c == 0:
            break
        if it % 2 == 0:
            for r in range(1, n_ranks):
                reorder(r, up)
        else:
            for r in range(n_ranks - 2, -1, -1):
                reorder(r, down)
        c = crossings()
        if c < best_c:
            best, best_c = [list(layer) for layer in layers], c
    layers = best
    for layer in layers:
        for i, n in enumerate(layer):
            pos[n] = i

    # 5. x: pull towards neighbours, then pack without overlaps
    def real(n: str) -> bool:
        return n in key

    def sep(a: str, b: str) -> float:
        return (width[a] + width[b]) / 2 + (GAP_X if real(a) and real(b) else DUMMY_GAP)

    # weights: boxes on the longest paths through the cluster stay put, side branches (an auxiliary classifier,
    # an output in the middle) and dummy nodes give way
    below: dict[str, int] = {}
    for layer in reversed(layers):
        for n in layer:
            below[n] = max([0] + [below[b] + 1 for b, _, _ in down[n]])
    longest = max(rank[n] + below[n] for n in below)
    weight = {n: (1.0 if real(n) else 0.25) / (1 + 4 * (longest - rank[n] - below[n])) for n in below}

    x: dict[str, float] = {}
    for layer in layers:
        cursor = 0.0
        for i, n in enumerate(layer):
            if i > 0:
                cursor += sep(layer[i - 1], n)
            x[n] = cursor
        for n in layer:
            x[n] -= cursor / 2

    def place(r: int, going_down: bool) -> None:
        layer = layers[r]
        desired = []
        for n in layer:  # the weighted mean of where the neighbours want it
            if going_down:
                ts = [(x[a] + oa - ob, weight[a]) for a, oa, ob in up[n]]
            else:
                ts = [(x[b] + ob - oa, weight[b]) for b, oa, ob in down[n]]
            desired.append(sum(t * w for t, w in ts) / sum(w for _, w in ts) if ts else x[n])
        cum = [0.0]
        for i in range(1, len(layer)):
            cum.append(cum[i - 1] + sep(layer[i - 1], layer[i]))
        targets = [d - c for d, c in zip(desired, cum)]
        for i, y in enumerate(_isotonic(targets, [weight[n] for n in layer])):
            x[layer[i]] = y + cum[i]

    for it in range(PLACE_SWEEPS):
        if it % 2 == 0:
            for r in range(1, n_ranks):
                place(r, True)
        else:
            for r in range(n_ranks - 2, -1, -1):
                place(r, False)

    if len(ins) == 1 and len(outs) == 1:  # enter right above the exit: a chain of such groups stays straight
        x[f"in:{ins[0]}"] = x[f"out:{outs[0]}"]

    left = min(x[n] - width[n] / 2 for n in x)
    right = max(x[n] + width[n] / 2 for n in x)
    w = right - left + 2 * PAD
    shift = PAD - left
    if is_group and w < header_w + 2 * PAD:
        shift += (header_w + 2 * PAD - w) / 2
        w = header_w + 2 * PAD
    for n in x:
        x[n] += shift

    # y: ranks as tall as their tallest box
    tops, heights = [], []
    y = (HEADER if is_group else 0) + PAD
    for r, layer in enumerate(layers):
        hr = max([0.0] + [height[n] for n in layer])
        tops.append(y)
        heights.append(hr)
        ports_next = (r == 0 and ins) or (r == n_ranks - 2 and outs)  # a row of ports is just a border
        y += hr + (PORT_GAP if ports_next else RANK_GAP)
    h = tops[-1] + heights[-1] + PAD
    if not is_group:
        w, h = w + 2 * (MARGIN - PAD), h + 2 * (MARGIN - PAD)
        for n in x:
            x[n] += MARGIN - PAD
        tops = [t + MARGIN - PAD for t in tops]
    ypos = {n: tops[rank[n]] + heights[rank[n]] / 2 for n in x}

    # routes: box bottom (or entry port) -> dummies -> box top (or exit port)
    def start(n: str, off: float) -> tuple[float, float]:
        return (x[n], 0.0) if n.startswith("in:") else (x[n] + off, ypos[n] + height[n] / 2)

    def end(n: str, off: float) -> tuple[float, float]:
        return (x[n], h) if n.startswith("out:") else (x[n] + off, ypos[n] - height[n] / 2)

    routes: list[Route] = []
    for (src, dst, v, arrow), chain in zip(kept, chains):
        off_src = sub[src].out_x[v] - sub[src].w / 2 if src in sub else 0.0
        off_dst = sub[dst].in_x[v] - sub[dst].w / 2 if dst in sub else 0.0
        pts = [start(src, off_src)]
        for d in chain[1:-1]:
            pts += [(x[d], tops[rank[d]]), (x[d], tops[rank[d]] + heights[rank[d]])]
        pts.append(end(dst, off_dst))
        routes.append(Route(v, pts, arrow, src, dst))
    for src, dst, v, arrow in back:
        off_src = sub[src].out_x[v] - sub[src].w / 2 if src in sub else 0.0
        off_dst = sub[dst].in_x[v] - sub[dst].w / 2 if dst in sub else 0.0
        routes.append(Route(v, [start(src, off_src), end(dst, off_dst)], arrow, src, dst))

    # edges converging on one box end side by side, in the order they arrive
    for c in kids:
        if c in sub:
            continue
        into = [r for r in routes if r.dst == c]
        if len(into) < 2:
            continue
        into.sort(key=lambda r: r.points[-2][0])
        step = min(SPREAD, (width[c] - 16) / (len(into) - 1))
        for i, r in enumerate(into):
            r.points[-1] = (x[c] - step * (len(into) - 1) / 2 + i * step, r.points[-1][1])

    return _Cluster(w, h, kids, {c: (x[c], ypos[c]) for c in kids}, size, {c: rank[c] for c in kids},
                    {v: x[f"in:{v}"] for v in ins}, {v: x[f"out:{v}"] for v in outs}, routes, sub, len(back))


def _isotonic(targets: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to `targets` in weighted least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum of weight * target, sum of weights, count]
    for t, w in zip(targets, weights):
        blocks.append([w * t, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, sw, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += sw
            blocks[-1][2] += n
    out: list[float] = []
    for s, sw, n in blocks:
        out.extend([s / sw] * int(n))
    return out
