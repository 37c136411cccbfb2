#!/usr/bin/env bash
# Echo throughput and latency of the Python host: starts bench/loadgen.py (a
# Python stand-in for shared/bench's Rust loadgen, same frames and checks) on
# an ephemeral 127.0.0.1 port, runs examples/echo_gateway.py against it, and
# prints the loadgen's JSON line on stdout (the gateway's counts on stderr).
#
# Usage: bench/run_echo.sh N W [same|split|none]
#   PIN (third argument, default: same for W=1, split otherwise), as the
#   shared rig: same = both processes on CPU 0, split = loadgen CPU 0,
#   gateway CPU 1.
# Environment: RELAY_COMPONENT_WASM (required), PY (default: the venv's python),
#   PEER_CMD ('... {URL} ...' runs another gateway instead of echo_gateway.py).
# Exit status: the loadgen's (0 all replies correct, 3 missing/mismatched, 2 setup).
set -u
HERE="$(cd "$(dirname "$0")/.." && pwd)"
N="${1:-2000}"
W="${2:-1}"
PIN="${3:-}"
if [ -z "$PIN" ]; then if [ "$W" -le 1 ]; then PIN=same; else PIN=split; fi; fi
PY="${PY:-$HERE/.venv/bin/python}"
: "${RELAY_COMPONENT_WASM:?set RELAY_COMPONENT_WASM to the relay component file}"
case "$PIN" in
  same) LG_PIN=(taskset -c 0); PEER_PIN=(taskset -c 0) ;;
  split) LG_PIN=(taskset -c 0); PEER_PIN=(taskset -c 1) ;;
  none) LG_PIN=(); PEER_PIN=() ;;
  *) echo "unknown pin $PIN (same|split|none)" >&2; exit 2 ;;
esac
WORK="$(mktemp -d /tmp/relay-py-bench.XXXXXX)"
LG_PID=""; PEER_PID=""
cleanup() {
  # Only the two processes this script started, by PID.
  [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null
  [ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"${LG_PIN[@]}" "$PY" "$HERE/bench/loadgen.py" --n "$N" --window "$W" --timeout-s 120 \
  >"$WORK/loadgen.out" 2>"$WORK/loadgen.err" &
LG_PID=$!
for _ in $(seq 100); do [ -s "$WORK/loadgen.out" ] && break; sleep 0.05; done
URL="$(head -n1 "$WORK/loadgen.out")"
case "$URL" in ws://127.0.0.1:*) ;; *) echo "loadgen did not start" >&2; cat "$WORK/loadgen.err" >&2; exit 2 ;; esac
if [ -n "${PEER_CMD:-}" ]; then
  timeout 200 "${PEER_PIN[@]}" bash -c "${PEER_CMD//\{URL\}/$URL}" >/dev/null 2>"$WORK/peer.err" &
else
  timeout 200 "${PEER_PIN[@]}" "$PY" "$HERE/examples/echo_gateway.py" --wasm "$RELAY_COMPONENT_WASM" \
    --connector "$URL" --no-reconnect >/dev/null 2>"$WORK/peer.err" &
fi
PEER_PID=$!
wait "$LG_PID"; RC=$?; LG_PID=""
for _ in $(seq 100); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.05; done
kill "$PEER_PID" 2>/dev/null; wait "$PEER_PID" 2>/dev/null; PEER_PID=""
tail -n1 "$WORK/loadgen.out"
tail -n1 "$WORK/peer.err" >&2
exit "$RC"
