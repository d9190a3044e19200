"""The package's import graph has no cycles (counting imports inside functions), and output
files keep their mode when rewritten."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "pytest_saebench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_import_cycles_in_the_package():
    graph = _import_graph()
    assert "pytest_saebench.session" in graph["pytest_saebench.item_base"]
    assert _cycles(graph) == []


def test_gates_import_nothing_above_them_and_no_torch():
    """How a gate decides sits below everything that reads files or runs models."""
    import subprocess
    import sys

    graph = _import_graph()
    for name, deps in graph.items():
        if name.startswith("pytest_saebench.gates"):
            above = {d for d in deps if not d.startswith("pytest_saebench.gates")} - {
                "pytest_saebench.errors"}
            assert not above, (name, above)
    code = ("import sys, pytest_saebench.gates.regression, pytest_saebench.gates.frontier, "
            "pytest_saebench.gates.thresholds, pytest_saebench.gates.stats; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_loading_is_one_directional():
    """Model-specific loaders sit below the name resolver; format converters below discovery."""
    graph = _import_graph()
    loading = "pytest_saebench.loading."
    assert loading + "smollm2" in graph[loading + "model"]
    assert loading + "model" not in graph[loading + "smollm2"]
    for low in ("detect", "schema", "hub", "formats", "published"):
        assert loading + "checkpoints" not in graph[loading + low], low
        assert loading + "sae" not in graph[loading + low], low


def test_atomic_writes_keep_the_mode_or_follow_the_umask(tmp_path):
    from pytest_saebench.atomic import write_text_atomic

    old = os.umask(0o022)
    try:
        fresh = write_text_atomic(tmp_path / "new.json", "{}")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        write_text_atomic(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_writing_several_files_is_all_or_nothing(tmp_path, monkeypatch):
    from pytest_saebench import atomic

    old = {tmp_path / "a.json": b"old a", tmp_path / "sub" / "b.json": b"old b"}
    for path, blob in old.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blob)
    real_chmod = atomic.os.chmod
    calls = []

    def chmod(path, mode):  # the disk fills up while the second file is staged
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_chmod(path, mode)

    monkeypatch.setattr(atomic.os, "chmod", chmod)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_many_atomic([(p, b"new") for p in old])
    assert {p: p.read_bytes() for p in old} == old
    assert not [p for p in tmp_path.rglob("*.tmp")]
    monkeypatch.setattr(atomic.os, "chmod", real_chmod)
    atomic.write_many_atomic([(p, b"new") for p in old])
    assert all(p.read_bytes() == b"new" for p in old)
