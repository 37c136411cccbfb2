#!/usr/bin/env python3
"""A minimal Python gateway on the in-process relay host: connect to a
connector, echo every inbound message back to its chat, stop on SIGINT or
SIGTERM, after N messages (``--max-messages`` / ``ECHO_MAX_MESSAGES``), or,
with ``--no-reconnect``, when the connector closes the socket.

    python examples/echo_gateway.py --wasm relay.wasm --connector http://127.0.0.1:9100

Credentials come from ``GATEWAY_RELAY_ID`` / ``GATEWAY_RELAY_SECRET`` (both
needed for an authenticated dial). Prints one JSON line of statistics on
stderr when it stops; exit status 0 on a clean stop, 1 when the adapter
could not connect, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from relay_host import (
    AdapterConfig,
    FatalError,
    Identity,
    Plugin,
    RelayAdapter,
    RelayMessage,
    Secret,
    SendResult,
    State,
)


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--wasm", default=env("RELAY_COMPONENT_WASM"), help="relay component file")
    ap.add_argument("--connector", default=env("GATEWAY_RELAY_URL"), help="connector base URL")
    ap.add_argument("--platform", default="discord")
    ap.add_argument("--bot-id", default="B1")
    ap.add_argument(
        "--max-messages",
        type=int,
        default=int(env("ECHO_MAX_MESSAGES", "0") or 0),
        help="stop after echoing this many messages (0: run until stopped)",
    )
    ap.add_argument("--prefix", default="", help="text put before each echo")
    ap.add_argument(
        "--no-reconnect", action="store_true", help="stop when the connector closes the socket"
    )
    ap.add_argument("--log-level", default=env("ECHO_LOG_LEVEL", "WARNING"))
    args = ap.parse_args()
    if not args.wasm or not args.connector:
        ap.error("--wasm (or RELAY_COMPONENT_WASM) and --connector are required")
    return args


async def run(args: argparse.Namespace) -> int:
    secret = os.environ.get("GATEWAY_RELAY_SECRET", "").strip()
    config = AdapterConfig(
        connector_url=args.connector,
        identities=[Identity(args.platform, args.bot_id)],
        gateway_id=os.environ.get("GATEWAY_RELAY_ID", "").strip(),
        secret=Secret(secret) if secret else None,
        reconnect=not args.no_reconnect,
    )
    adapter = RelayAdapter(Plugin.from_file(args.wasm), config, name="echo")
    stop = asyncio.Event()
    counts = {"inbound": 0, "echoed": 0, "failed": 0}
    tasks: set[asyncio.Task[None]] = set()

    async def echo(message: RelayMessage) -> None:
        result: SendResult = await adapter.send(message.chat_id, args.prefix + message.text)
        counts["echoed" if result.success else "failed"] += 1
        if result.declined:
            logging.warning("echo declined in %s: %s", message.chat_id, result.error)
        if args.max_messages and counts["echoed"] + counts["failed"] >= args.max_messages:
            stop.set()

    def on_message(message: RelayMessage) -> None:
        counts["inbound"] += 1
        # Safe with us once the echo task exists: accept first, so a buffered
        # message is acked, then answer it without blocking the socket.
        message.accept()
        task = asyncio.ensure_future(echo(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_state(state: State, detail: str) -> None:
        logging.info("state %s %s", state, detail)
        if state in (State.STOPPED, State.DISABLED):
            stop.set()

    def on_fatal(error: FatalError) -> None:
        logging.error("fatal %s (retryable %s): %s", error.code, error.retryable, error.message)

    adapter.set_message_handler(on_message)
    adapter.set_state_handler(on_state)
    adapter.set_fatal_handler(on_fatal)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started = time.monotonic()
    if not await adapter.connect():
        print(f"echo_gateway: not connected (state {adapter.state})", file=sys.stderr)
        await adapter.disconnect()
        return 1
    print(
        f"echo_gateway: ready, echoing messages from {args.connector}", file=sys.stderr, flush=True
    )
    await stop.wait()
    if tasks:
        await asyncio.wait(set(tasks), timeout=5.0)
    await adapter.disconnect()
    counts_line = dict(counts, wall_s=round(time.monotonic() - started, 3))
    print(json.dumps(counts_line), file=sys.stderr, flush=True)
    return 0


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
