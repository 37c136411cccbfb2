#!/usr/bin/env python3
"""Checks that module imports point one way.

Reads the layer lists in docs/architecture.md: each fenced block tagged
`layers` names a crate source folder, then one line per layer, bottom first:

    crate host/src
    1 config types error
    2 messages events

Every top-level module of a listed crate must appear in exactly one layer.
For each Rust file (tests and `#[cfg(test)]` blocks aside) the script
collects the modules it names through `crate::a::b` and `super::` paths.
A file may use modules of its own layer or of layers below; an edge to a
layer above is reported. Separately, every crate given on the command line
(listed or not) is checked for cycles between files. Exit status 1 on any
finding. Usage: .ci/layers.py [SRC_DIR ...]   (default: the listed crates)
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
ROOT_FILES = {"lib.rs", "main.rs"}


def layer_lists(doc: Path) -> dict[str, dict[str, int]]:
    """crate folder -> {top-level module: layer number}."""
    out: dict[str, dict[str, int]] = {}
    for block in re.findall(r"```layers\n(.*?)```", doc.read_text(), re.S):
        crate = None
        layers: dict[str, int] = {}
        for line in block.splitlines():
            words = line.split()
            if not words:
                continue
            if words[0] == "crate":
                crate = words[1]
            else:
                for module in words[1:]:
                    if module in layers:
                        sys.exit(f"{doc}: module {module} listed twice")
                    layers[module] = int(words[0])
        if crate is None:
            sys.exit(f"{doc}: a layers block names no crate")
        out[crate] = layers
    return out


def module_path(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def without_tests(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: cut.start()] if cut else text


def crate_files(src: Path, skip: set[str]) -> dict[tuple[str, ...], Path]:
    files = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.name in ROOT_FILES and len(rel.parts) == 1:
            continue
        if rel.parts[0] in skip or rel.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        files[module_path(src, path)] = path
    return files


def edges(src: Path, files: dict[tuple[str, ...], Path]) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    def resolve(parts: list[str]) -> tuple[str, ...] | None:
        for k in range(len(parts), 0, -1):
            if tuple(parts[:k]) in files:
                return tuple(parts[:k])
        return None

    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in files}
    for module, path in files.items():
        text = without_tests(path.read_text(encoding="utf-8", errors="replace"))
        targets: list[list[str]] = []
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)(?:::\{([^}]*)\})?", text):
            base = m.group(1).split("::")
            targets.append(base)
            for item in (m.group(2) or "").split(","):
                item = item.strip().split(" as ")[0]
                if item and item != "self":
                    targets.append(base + item.split("::"))
        # `super::x` from a file: its parent module (a `mod.rs` is the module
        # itself, so its parent is one up as well).
        parent = list(module[:-1])
        for m in re.finditer(r"\bsuper::((?:\w+::)*\w+)", text):
            targets.append(parent + m.group(1).split("::"))
        for target in targets:
            found = resolve(target)
            if found is not None and found != module:
                graph[module].add(found)
    return graph


def cycles(graph: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[tuple[str, ...]]]:
    """Strongly connected components of more than one file (iterative Tarjan)."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    found = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def name(module: tuple[str, ...]) -> str:
    return "::".join(module)


def check(src_name: str, layers: dict[str, int] | None) -> list[str]:
    src = ROOT / src_name
    # The CLI of relay-host is the binary crate (main.rs) beside the library.
    skip = {"cli"} if (src / "main.rs").exists() and (src / "lib.rs").exists() else set()
    files = crate_files(src, skip)
    graph = edges(src, files)
    problems = []
    if layers is not None:
        tops = {m[0] for m in files}
        for top in sorted(tops - set(layers)):
            problems.append(f"{src_name}: module {top} is in no layer of {DOC.name}")
        for top in sorted(set(layers) - tops):
            problems.append(f"{src_name}: layer list names {top}, which does not exist")
        for module, targets in sorted(graph.items()):
            for target in sorted(targets):
                here, there = layers.get(module[0]), layers.get(target[0])
                if here is not None and there is not None and there > here:
                    problems.append(
                        f"{src_name}: {name(module)} (layer {here}) uses {name(target)} (layer {there})"
                    )
    for component in cycles(graph):
        problems.append(f"{src_name}: import cycle: " + " -> ".join(name(m) for m in component))
    return problems


def main() -> int:
    listed = layer_lists(DOC)
    crates = sys.argv[1:] or sorted(listed)
    problems = []
    for crate in crates:
        problems += check(crate.rstrip("/"), listed.get(crate.rstrip("/")))
    for line in problems:
        print(line)
    if not problems:
        print(f"layers: {len(crates)} crate(s), imports point one way, no cycles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
