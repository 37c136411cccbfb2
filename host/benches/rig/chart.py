#!/usr/bin/env python3
"""Plots a W sweep of the rig as an SVG chart: throughput (msg/s) and p50
latency against the window W, one line per gateway, from the rig's raw
JSON lines (``/tmp/relay-rig/results/raw-*.jsonl``). Each point is the
median of the clean runs of its cell. Standard library only.

Usage: python3 host/benches/rig/chart.py RAW.jsonl [RAW.jsonl ...] --out docs/img/w-sweep.svg
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

# Gateway name in the rig -> label and colour in the chart.
PEERS = {
    "relay": ("relay-host (component)", "#1f77b4"),
    "relay-native": ("relay-host --native (core without wasm)", "#2ca02c"),
    "python": ("Python reference (hermes-agent 0.19.0)", "#d62728"),
    "native": ("rig native echo (ceiling)", "#7f7f7f"),
}

Cells = dict[str, dict[int, dict[str, float]]]


def load(paths: list[Path]) -> Cells:
    """Median msg/s and p50 per (peer, W) over runs with every reply correct."""
    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            clean = row.get("missing") == 0 and row.get("mismatches") == 0
            if clean and row.get("peer") in PEERS:
                runs[(row["peer"], int(row["window"]))].append(row)
    cells: Cells = defaultdict(dict)
    for (peer, window), rows in runs.items():
        cells[peer][window] = {
            "msgs_per_s": statistics.median(r["msgs_per_s"] for r in rows),
            "p50_us": statistics.median(r["p50_us"] for r in rows),
            "runs": len(rows),
        }
    return cells


def panel(
    cells: Cells,
    windows: list[int],
    key: str,
    title: str,
    unit: str,
    log_y: bool,
    x0: float,
    y0: float,
    w: float,
    h: float,
) -> list[str]:
    """One chart panel: axes, grid, a line and points per gateway."""
    values = [c[key] for peer in cells.values() for c in peer.values()]
    lo, hi = min(values), max(values)
    if log_y:
        lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        ticks = [10.0**e for e in range(lo_e, hi_e + 1)]

        def y_of(v: float) -> float:
            return y0 + h - (math.log10(v) - lo_e) / max(hi_e - lo_e, 1) * h
    else:
        top = hi * 1.1
        step = 10 ** math.floor(math.log10(top / 5))
        step *= 2 if top / step > 10 else 1
        ticks = [i * step for i in range(int(top // step) + 1)]

        def y_of(v: float) -> float:
            return y0 + h - v / top * h

    def x_of(i: int) -> float:
        return x0 + (i + 0.5) * w / len(windows)

    out = [
        f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-weight="bold">{title}</text>',
        f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333"/>',
    ]
    for t in ticks:
        y = y_of(t)
        label = f"{t / 1000:g}k" if t >= 1000 else f"{t:g}"
        out.append(
            f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    for i, window in enumerate(windows):
        out.append(
            f'<text x="{x_of(i):.1f}" y="{y0 + h + 18}" text-anchor="middle">W={window}</text>'
        )
    out.append(
        f'<text x="{x0 - 48}" y="{y0 + h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 - 48} {y0 + h / 2})">{unit}</text>'
    )
    for peer, (_, colour) in PEERS.items():
        points = [
            (x_of(i), y_of(cells[peer][window][key]))
            for i, window in enumerate(windows)
            if window in cells.get(peer, {})
        ]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        out.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'
            for x, y in points
        )
    return out


def render(cells: Cells, caption: str) -> str:
    windows = sorted({w for peer in cells.values() for w in peer})
    width, height = 980, 470
    body = panel(
        cells,
        windows,
        "msgs_per_s",
        "Echo throughput",
        "msg/s",
        False,
        80,
        50,
        380,
        300,
    )
    body += panel(
        cells,
        windows,
        "p50_us",
        "Echo latency, p50 (log scale)",
        "µs",
        True,
        580,
        50,
        380,
        300,
    )
    for i, (peer, (label, colour)) in enumerate(PEERS.items()):
        if peer not in cells:
            continue
        x, y = 80 + (i % 2) * 450, 400 + (i // 2) * 22
        body.append(
            f'<rect x="{x}" y="{y - 10}" width="14" height="10" fill="{colour}"/>'
        )
        body.append(f'<text x="{x + 20}" y="{y}">{label}</text>')
    body.append(f'<text x="80" y="{height - 8}" fill="#555">{caption}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="+", type=Path, help="the rig's raw-*.jsonl files")
    parser.add_argument("--out", type=Path, required=True, help="the SVG to write")
    parser.add_argument("--caption", default="", help="a line under the chart")
    args = parser.parse_args()
    cells = load(args.raw)
    if not cells:
        raise SystemExit("no clean runs of a known gateway in the input")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(cells, args.caption))
    for peer in PEERS:
        for window, cell in sorted(cells.get(peer, {}).items()):
            print(
                f"{peer:<13} W={window:<4} {cell['msgs_per_s']:>10,.0f} msg/s  "
                f"p50 {cell['p50_us']:>9,.1f} µs  ({cell['runs']:.0f} runs)"
            )


if __name__ == "__main__":
    main()
