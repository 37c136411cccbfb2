#!/usr/bin/env python3
"""A complete gateway over the stdio bridge, in Python's standard library.

Starts ``relay-host run --agent stdio``, answers every message with an echo
(accept first, then send), and stops by closing the bridge's stdin (the
adapter goes idle, so the connector buffers). Usage::

    GATEWAY_RELAY_ID=gw-1 GATEWAY_RELAY_SECRET=... \\
        python3 host/examples/stdio_gateway.py PATH/TO/relay-host http://127.0.0.1:9100

``STDIO_GATEWAY_EXIT_AFTER=N`` stops after N replies (the tests use it).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from typing import Any


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    relay_host, connector = sys.argv[1], sys.argv[2]
    exit_after = int(os.environ.get("STDIO_GATEWAY_EXIT_AFTER", "0"))
    bridge = subprocess.Popen(
        [relay_host, "run", "--agent", "stdio", "--connector", connector],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert bridge.stdin is not None and bridge.stdout is not None
    stdin = bridge.stdin
    ids = itertools.count(1)
    lock = threading.Lock()  # one writer at a time on the bridge's stdin
    replies: dict[int, str] = {}  # command id -> chat of a pending reply
    done = 0

    def command(op: str, **args: Any) -> int:
        request_id = next(ids)
        with lock:
            stdin.write(json.dumps({"id": request_id, "op": op, **args}) + "\n")
            stdin.flush()
        return request_id

    # Reading stdout on this thread while commands are written is enough
    # here: each write is one short line. A gateway that writes from other
    # threads too must keep reading stdout concurrently (see docs/cli.md).
    for raw in bridge.stdout:
        line = json.loads(raw)
        kind = line["kind"]
        if kind == "message" and not stdin.closed:
            event = line["event"]
            chat = event["source"]["chat_id"]
            print(f"message in {chat}: {event['text']!r}", flush=True)
            command("accept", delivery=line["delivery"])
            replies[
                command("send", chat_id=chat, content=f"you said: {event['text']}")
            ] = chat
        elif kind == "result" and line["id"] in replies:
            chat = replies.pop(line["id"])
            result = line.get("result") or {}
            print(f"replied in {chat}: success={result.get('success')}", flush=True)
            done += 1
            if exit_after and done >= exit_after:
                stdin.close()  # end of input: the bridge shuts down
        elif kind == "result" and not line["ok"]:
            print(f"command {line['id']} failed: {line['error']}", file=sys.stderr)
        elif kind == "state":
            print(f"state: {line['state']}", flush=True)
        elif kind == "fatal":
            print(f"fatal {line['code']}: {line['message']}", file=sys.stderr)
    return bridge.wait()


if __name__ == "__main__":
    sys.exit(main())
