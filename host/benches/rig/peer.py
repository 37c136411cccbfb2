#!/usr/bin/env python3
"""Runs one gateway process for the shared bench rig and reports its CPU.

Usage: peer.py COMMAND [ARGS...]

The rig reads the last JSON line of a peer's stderr for `peer_cpu_s`, and
stops a peer with SIGTERM. This wrapper forwards SIGTERM/SIGINT to the
command (relay-host then shuts down cleanly), waits for it, and prints
`{"peer_cpu_s": user+system}` of the command on stderr.
"""
import json
import resource
import signal
import subprocess
import sys


def main() -> int:
    child = subprocess.Popen(sys.argv[1:])

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = child.wait(timeout=600)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"peer_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                      "exit": code}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
