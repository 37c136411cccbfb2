#!/usr/bin/env python3
"""Process start to ``state: ready``: ``relay-host run`` against a local stub
connector, with no compilation cache, a cold cache and a warm cache.

Each run starts a fresh ``relay-host run --agent print`` process, times it
from ``Popen`` to the ``{"kind":"state","state":"ready"}`` line on stdout,
then stops it with SIGTERM. Prints one table of medians (and p10/p90) and
one raw line per run on stderr.

Usage: python3 host/benches/startup.py [RUNS]   (default 20; build first with
       cargo build --release -p relay-host -p relay-stub)
Env:   RELAY_HOST_BIN, RELAY_STUB_CONNECTOR  binaries (default target/release)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0


def binary(env: str, name: str) -> str:
    path = os.environ.get(env) or str(REPO / "target" / "release" / name)
    if not os.access(path, os.X_OK):
        sys.exit(
            f"{path} is missing: cargo build --release -p relay-host -p relay-stub"
        )
    return path


def start_to_ready(host: str, url: str, cache: list[str]) -> float:
    """Seconds from spawn to the ready line (the process is stopped after)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [host, "run", "--connector", url, "--agent", "print", *cache],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("kind") == "state" and event.get("state") == "ready":
                return time.perf_counter() - started
            if time.perf_counter() - started > DEADLINE_S:
                break
        raise SystemExit(f"no ready line within {DEADLINE_S} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p10 = ms[max(0, len(ms) // 10)]
    p90 = ms[min(len(ms) - 1, (len(ms) * 9) // 10)]
    return f"{statistics.median(ms):8.1f} ms  (p10 {p10:.1f}, p90 {p90:.1f})"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    host = binary("RELAY_HOST_BIN", "relay-host")
    stub_bin = binary("RELAY_STUB_CONNECTOR", "stub-connector")
    stub = subprocess.Popen([stub_bin], stdout=subprocess.PIPE, text=True)
    scratch = Path(tempfile.mkdtemp(prefix="relay-startup-"))
    try:
        assert stub.stdout is not None
        url = stub.stdout.readline().strip()
        cache_dir = scratch / "cache"
        modes = {
            "no cache (--no-cache)": lambda: ["--no-cache"],
            "cold cache (emptied before each run)": lambda: (
                shutil.rmtree(cache_dir, ignore_errors=True),
                ["--cache-dir", str(cache_dir)],
            )[1],
            "warm cache": lambda: ["--cache-dir", str(cache_dir)],
        }
        results: dict[str, list[float]] = {}
        for name, flags in modes.items():
            samples = []
            for i in range(runs):
                seconds = start_to_ready(host, url, flags())
                samples.append(seconds)
                print(f"{name}\t{i}\t{seconds * 1000:.2f} ms", file=sys.stderr)
            results[name] = samples
        print(f"relay-host run: process start to state ready, {runs} runs each")
        for name, samples in results.items():
            print(f"  {name:<38} {summary(samples)}")
    finally:
        stub.send_signal(signal.SIGTERM)
        stub.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
