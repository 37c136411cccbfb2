#!/usr/bin/env python3
"""A Python stand-in for the shared benchmark rig's loadgen
(``shared/bench/loadgen``, Rust): same frames, same checks, same JSON line.

Listens on 127.0.0.1 (path /relay), prints ``ws://127.0.0.1:PORT/relay`` as
its first stdout line, accepts one gateway, answers its hello with the rig's
"Bench" descriptor, then drives N ``inbound`` frames (``bench <seq>`` to chat
``c<seq>``, scope ``g<seq>``) with at most W awaiting their echo. Each
``outbound`` op=send is checked (content, ``metadata.scope_id``), timed
(inbound written -> outbound read) and answered with a success result. When
all N are answered, or ``--timeout-s`` passes, it closes the socket and
prints one JSON line. Loopback only; bounded in count and time.

Use it when the Rust loadgen cannot be built. It costs more CPU per message
than the Rust one, so pin it to its own core for W>1 (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


def inbound_frame(seq: int, platform: str) -> str:
    frame = {
        "type": "inbound",
        "event": {
            "text": f"bench {seq}",
            "message_type": "text",
            "source": {
                "platform": platform,
                "chat_id": f"c{seq}",
                "chat_type": "channel",
                "user_id": f"u{seq}",
                "scope_id": f"g{seq}",
                "guild_id": f"g{seq}",
            },
            "message_id": f"i{seq}",
        },
    }
    return json.dumps(frame, separators=(",", ":")) + "\n"


def descriptor_frame(platform: str) -> str:
    descriptor = {
        "contract_version": 1,
        "platform": platform,
        "label": "Bench",
        "max_message_length": 2000,
        "supports_draft_streaming": False,
        "supports_edit": True,
        "supports_threads": False,
        "markdown_dialect": "plain",
        "len_unit": "chars",
    }
    return json.dumps({"type": "descriptor", "descriptor": descriptor}) + "\n"


def result_frame(request_id: str, result: dict[str, Any]) -> str:
    return json.dumps({"type": "outbound_result", "requestId": request_id, "result": result}) + "\n"


def percentile(sorted_ns: list[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    idx = min(len(sorted_ns) - 1, max(0, round(q * len(sorted_ns) + 0.5) - 1))
    return round(sorted_ns[idx] / 1000, 1)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n: int = args.n
        self.sent_ns = [0] * self.n
        self.got = [False] * self.n
        self.lat_ns: list[int] = []
        self.stats = {
            "hellos": 0,
            "scope_mismatches": 0,
            "content_mismatches": 0,
            "duplicates": 0,
            "unexpected": 0,
            "other_ops": 0,
            "other_frames": 0,
            "bad_frames": 0,
        }
        self.window = asyncio.Semaphore(args.window)
        self.done = asyncio.Event()
        self.connected = asyncio.Event()
        self.replied = 0
        self.started_ns = 0
        self.last_reply_ns = 0
        self.closed_early = False

    async def handle(self, ws: ServerConnection) -> None:
        if self.connected.is_set():
            await ws.close(1013, "one gateway only")
            return
        self.connected.set()
        feeder: asyncio.Task[None] | None = None
        buffer = ""
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                buffer += message
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        frame = json.loads(line)
                    except ValueError:
                        self.stats["bad_frames"] += 1
                        continue
                    kind = frame.get("type")
                    if kind == "hello":
                        self.stats["hellos"] += 1
                        await ws.send(descriptor_frame(self.args.platform))
                        if feeder is None:
                            feeder = asyncio.ensure_future(self.feed(ws))
                    elif kind == "outbound":
                        await self.on_outbound(ws, frame)
                    elif kind == "going_idle":
                        await ws.send('{"type":"going_idle_ack"}\n')
                    else:
                        self.stats["other_frames"] += 1
                if self.done.is_set():
                    break
        except ConnectionClosed:
            pass
        if not self.done.is_set():
            self.closed_early = True
            self.done.set()
        if feeder is not None:
            feeder.cancel()
        await ws.close(1000, "bench done")

    async def feed(self, ws: ServerConnection) -> None:
        self.started_ns = time.perf_counter_ns()
        platform = self.args.platform
        for seq in range(self.n):
            await self.window.acquire()
            frame = inbound_frame(seq, platform)
            self.sent_ns[seq] = time.perf_counter_ns()
            await ws.send(frame)

    async def on_outbound(self, ws: ServerConnection, frame: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        rid = frame.get("requestId", "")
        action = frame.get("action") or {}
        op = action.get("op")
        if op != "send":
            self.stats["other_ops"] += 1
            result: dict[str, Any] = {"success": True}
            if op == "get_chat_info":
                chat = action.get("chat_id")
                result["chat_info"] = {"name": chat, "type": "channel"}
            await ws.send(result_frame(rid, result))
            return
        chat = str(action.get("chat_id", ""))
        seq = int(chat[1:]) if chat.startswith("c") and chat[1:].isdigit() else -1
        if not 0 <= seq < self.n or self.sent_ns[seq] == 0:
            self.stats["unexpected"] += 1
        elif self.got[seq]:
            self.stats["duplicates"] += 1
        else:
            self.got[seq] = True
            self.lat_ns.append(now - self.sent_ns[seq])
            if action.get("content") != f"bench {seq}":
                self.stats["content_mismatches"] += 1
            if (action.get("metadata") or {}).get("scope_id") != f"g{seq}":
                self.stats["scope_mismatches"] += 1
            self.replied += 1
            self.last_reply_ns = now
            self.window.release()
        result = {"success": True, "message_id": f"m{max(seq, 0)}"}
        await ws.send(result_frame(rid, result))
        if self.replied == self.n:
            self.done.set()

    def report(self, timed_out: bool) -> dict[str, Any]:
        end = self.last_reply_ns if not timed_out else time.perf_counter_ns()
        seconds = max(1e-9, (end - self.started_ns) / 1e9) if self.started_ns else 0.0
        lat = sorted(self.lat_ns)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        mismatches = self.stats["scope_mismatches"] + self.stats["content_mismatches"]
        return {
            "n": self.n,
            "window": self.args.window,
            "seconds": round(seconds, 3),
            "msgs_per_s": round(self.replied / seconds, 1) if seconds else 0.0,
            "p50_us": percentile(lat, 0.50),
            "p99_us": percentile(lat, 0.99),
            "max_us": round(lat[-1] / 1000, 1) if lat else None,
            "mismatches": mismatches,
            "missing": self.n - self.replied,
            "mean_us": round(sum(lat) / len(lat) / 1000, 1) if lat else None,
            "p90_us": percentile(lat, 0.90),
            "replied": self.replied,
            **self.stats,
            "timed_out": timed_out,
            "gateway_closed_early": self.closed_early,
            "loadgen_cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            "loadgen": "python",
        }


def reject_other_paths(_conn: ServerConnection, request: Request) -> Response | None:
    if request.path != "/relay":
        return _conn.respond(400, "relay endpoint is /relay\n")
    return None


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--timeout-s", type=float, default=120.0)
    ap.add_argument("--accept-timeout-s", type=float, default=60.0)
    ap.add_argument("--platform", default="discord")
    args = ap.parse_args()
    run = Run(args)
    async with serve(
        run.handle,
        "127.0.0.1",
        args.port,
        process_request=reject_other_paths,
        compression=None,
        max_size=None,
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ws://127.0.0.1:{port}/relay", flush=True)
        try:
            await asyncio.wait_for(run.connected.wait(), args.accept_timeout_s)
        except asyncio.TimeoutError:
            print(json.dumps({"n": args.n, "error": "no gateway connected"}), flush=True)
            return 2
        timed_out = False
        try:
            await asyncio.wait_for(run.done.wait(), args.timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
        report = run.report(timed_out)
        print(json.dumps(report), flush=True)
    ok = report["missing"] == 0 and report["mismatches"] == 0
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
