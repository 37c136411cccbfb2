#!/usr/bin/env python3
"""Runs one gateway process for the shared bench rig and reports its CPU.

Usage: peer.py COMMAND [ARGS...]

The rig reads the last JSON line of a peer's stderr for `peer_cpu_s`, and
stops a peer with SIGTERM. This wrapper forwards SIGTERM/SIGINT to the
command (relay-host then shuts down cleanly), waits for it, and prints
`{"peer_cpu_s": user+system}` of the command on stderr.

The rig expects a peer to exit once the connector closes the socket (its
README, "Benchmarking another gateway"); relay-host re-dials instead, as a
gateway should, and the rig would then poll it for 5 s (forking `sleep`
about 100 times, CPU it counts as foreign work and retries the run for).
So this wrapper passes the command's stderr through and stops the command
at its first "relay connection closed" log line: the loadgen accepts one
gateway, so that line is the end of the run.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys

CLOSED = "relay connection closed"


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stderr=subprocess.PIPE, text=True)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    assert child.stderr is not None
    for line in child.stderr:
        sys.stderr.write(line)
        if CLOSED in line and child.poll() is None:
            child.send_signal(signal.SIGTERM)
    try:
        code = child.wait(timeout=600)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {"peer_cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "exit": code}
        ),
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
