"""``examples/echo_gateway.py`` as a subprocess against the stub connector."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import WAIT, Stub, guild_event

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "echo_gateway.py"


async def start_example(component_path: Path, stub: Stub, *args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, RELAY_COMPONENT_WASM=str(component_path))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--connector",
        stub.base_url,
        *args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def read_until(proc: asyncio.subprocess.Process, needle: str) -> list[str]:
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), WAIT)
        if not raw:
            raise AssertionError(f"example exited before {needle!r}: {lines}")
        lines.append(raw.decode().rstrip())
        if needle in lines[-1]:
            return lines


async def test_echo_gateway_stops_after_n_messages(component_path: Path, stub: Stub) -> None:
    proc = await start_example(component_path, stub, "--max-messages", "3", "--prefix", "echo: ")
    try:
        await read_until(proc, "echo_gateway: ready")
        for i in range(3):
            await stub.do({"do": "push_inbound", "event": guild_event(f"hello {i}", f"m-{i}")})
        await stub.wait_for(lambda: len(stub.frames_of("outbound")) >= 3, "three echoes")
        contents = sorted(f["action"]["content"] for f in stub.frames_of("outbound"))
        assert contents == ["echo: hello 0", "echo: hello 1", "echo: hello 2"]
        assert all(
            f["action"]["metadata"]["scope_id"] == "guildA" for f in stub.frames_of("outbound")
        )
        lines = await read_until(proc, '"echoed"')
        stats = json.loads(lines[-1])
        assert (stats["echoed"], stats["failed"]) == (3, 0), stats
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        # It shut down gracefully: going_idle, then a normal close.
        await stub.frame("going_idle")
        await stub.do({"expect": "closed", "conn": 0, "code": 1000, "by": "gateway"})
        await stub.finish()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_echo_gateway_stops_on_sigint(component_path: Path, stub: Stub) -> None:
    proc = await start_example(component_path, stub)
    try:
        await read_until(proc, "echo_gateway: ready")
        await stub.do({"do": "push_inbound", "event": guild_event("ping", "m-x")})
        await stub.wait_for(lambda: stub.frames_of("outbound"), "the echo")
        proc.send_signal(signal.SIGINT)
        lines = await read_until(proc, '"echoed"')
        assert json.loads(lines[-1])["echoed"] == 1
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        await stub.frame("going_idle")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
