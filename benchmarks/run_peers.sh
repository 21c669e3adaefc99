#!/usr/bin/env bash
# Run this repository's ReplayTables side by side with the peers on the peer
# harness ($BENCH_DIR) and print the markdown table.
#
#   bash benchmarks/run_peers.sh [NAME] [--workloads W1 W2 ...] [--peers ...]
#
# NAME (default: run-<UTC timestamp>) is the results folder under
# benchmarks/results/ (git-ignored): peers.json (raw), peers.md (tables), logs/.
# Extra arguments go to peers.py. Environment:
#   PEER_VENV_ROOT  venvs (default: the harness's own, ${TMPDIR:-/tmp}/peer-venvs); $PEER_VENV_ROOT/ours must be a
#                   venv with this repo installed editable (benchmarks/README.md)
#   BENCH_DIR       the peer harness folder (holding peers.py); required, it is not part of this repository
#   PEER_REPEATS, PEER_REPEAT_BUDGET_S   passed through to the harness
#
# The harness starts each worker inside its own folder, so an adapter given as a
# relative path would be looked up there; this script rewrites the adapter paths
# of benchmarks/peers.json (relative to the repository root) as absolute paths
# into a temporary config before calling the driver.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PEER_VENV_ROOT="${PEER_VENV_ROOT:-${TMPDIR:-/tmp}/peer-venvs}"
BENCH_DIR="${BENCH_DIR:?set BENCH_DIR to the peer harness folder (the one holding peers.py)}"
NAME="run-$(date -u +%Y%m%d-%H%M)"
if [[ $# -gt 0 && "$1" != --* ]]; then NAME="$1"; shift; fi
OUT="benchmarks/results/$NAME"
mkdir -p "$OUT"

DEFAULT_PEERS=(ReplayTables-next numpy-ref cpprb ReplayTables SB3)
if [[ -e "$PEER_VENV_ROOT/flashbax/bin/python" ]]; then DEFAULT_PEERS+=(flashbax); fi
ARGS=("$@")
[[ " ${ARGS[*]-} " == *" --peers "* ]] || ARGS+=(--peers "${DEFAULT_PEERS[@]}")
[[ " ${ARGS[*]-} " == *" --workloads "* ]] || ARGS+=(--workloads W1 W2 W3 W4)

CONFIG="$OUT/peers.config.json"
python3 - "$ROOT/benchmarks/peers.json" "$CONFIG" "$ROOT" <<'PY'
import json, os, sys
src, dst, root = sys.argv[1:]
cfg = json.load(open(src))
for p in cfg["peers"]:
    a = p["adapter"]
    if a.endswith(".py") or os.sep in a:
        p["adapter"] = os.path.normpath(os.path.join(root, a))
json.dump(cfg, open(dst, "w"), indent=1)
PY

echo "command: python3 $BENCH_DIR/peers.py --config $CONFIG ${ARGS[*]} --out $OUT" >&2
# progress goes to stderr (and driver.log); the tables go to stdout
python3 "$BENCH_DIR/peers.py" --config "$CONFIG" "${ARGS[@]}" --out "$OUT" 2>&1 | tee "$OUT/driver.log" >&2
python3 "$ROOT/benchmarks/ratios.py" "$OUT" | tee "$OUT/ratios.md"
echo
cat "$OUT/peers.md"
