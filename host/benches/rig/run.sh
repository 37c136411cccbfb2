#!/usr/bin/env bash
# Runs the shared benchmark rig (../shared/bench, read-only) with two more
# gateways next to its `python` and `native` (echo ceiling) peers:
#   relay        relay-host run --agent echo (the component, the product)
#   relay-native relay-host run --agent echo --native (relay-core without wasm)
# Usage: host/benches/rig/run.sh [REPS]        (default 3)
# Env:   RIG_SRC  the rig to copy (default: ../shared/bench next to the repo)
#        RIG      the writable copy (default /tmp/relay-rig; re-created)
#        MATRIX   cells "peer:N:W ..." (default: all four peers, N=20000, W=1 and 256)
#        HOST_BIN a relay-host binary to measure instead of building this tree's
#                 (e.g. a copy built at another commit, for a before/after)
#        PIN, QUIET_PCT, MAX_TRIES ...   passed to the rig's bench_all.sh
# Needs CPython 3 for the rig; the python peer needs /tmp/pybench
# (the rig's setup_pybench.sh, run here when missing).
set -eu
REPO="$(cd "$(dirname "$0")/../../.." && pwd)"
RIG_SRC="${RIG_SRC:-$REPO/../shared/bench}"
RIG="${RIG:-/tmp/relay-rig}"
REPS="${1:-3}"
export MATRIX="${MATRIX:-relay:20000:1 relay-native:20000:1 python:20000:1 native:20000:1 relay:20000:256 relay-native:20000:256 python:20000:256 native:20000:256}"

if [ -z "${HOST_BIN:-}" ]; then
  (cd "$REPO" && cargo build --release -q -p relay-host)
  HOST_BIN="$REPO/target/release/relay-host"
fi
PEER_PY="$REPO/host/benches/rig/peer.py"

rm -rf "$RIG"
mkdir -p "$RIG"
(cd "$RIG_SRC" && tar --exclude='./*/target' --exclude='./results' -cf - .) | (cd "$RIG" && tar -xf -)
# Our two peers, as the rig's README suggests: cases next to `native`.
python3 - "$RIG/run_peer.sh" "$HOST_BIN" "$PEER_PY" <<'PY'
import sys
path, host, peer = sys.argv[1:4]
text = open(path).read()
cmd = (f'timeout "$PEER_LIMIT" "${{PEER_PIN[@]}}" python3 {peer} {host} run --connector "$URL" '
       '--platform discord --bot-id B1 --agent echo')
cases = (f'  relay) {cmd} >/dev/null 2>"$PEER_LOG" & ;;\n'
         f'  relay-native) {cmd} --native >/dev/null 2>"$PEER_LOG" & ;;\n')
anchor = '  custom)\n'
assert anchor in text, "run_peer.sh changed: no custom case"
text = text.replace(anchor, cases + anchor, 1)
open(path, 'w').write(text)
PY
if [[ "$MATRIX" == *python:* ]] && [ ! -x /tmp/pybench/bin/python ]; then
  (cd "$RIG" && ./setup_pybench.sh)
fi
cd "$RIG"
./bench_all.sh "$REPS"
