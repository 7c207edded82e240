#!/usr/bin/env bash
# The slow test variants the default suite leaves out (full-size forward passes of the whole zoo, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -m slow "$@"
