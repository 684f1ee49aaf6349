"""Sans-IO cores import no I/O: parse every core module's imports and fail on a forbidden one.

STYLE.md rule 2: cores import the standard library's pure parts, msgspec and other cores —
never asyncio, socket, time, os, threading, the global `random`, or an adapter.

`random` is special: a core is *handed* a `random.Random` (it must never draw from the module's
global generator), so `import random` is allowed only under `if TYPE_CHECKING:` (for the
annotation). Any runtime `import random` / `from random import ...` fails this test, which makes
calls like `random.random()` impossible inside a core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The sans-IO Raft core and its pure companions.
CORE_MODULES = [
    "aspen/raft/types.py",
    "aspen/raft/messages.py",
    "aspen/raft/config.py",
    "aspen/raft/ready.py",
    "aspen/raft/raft_log.py",
    "aspen/raft/progress.py",
    "aspen/raft/read_only.py",
    "aspen/raft/core.py",
    "aspen/raft/leader.py",
    "aspen/raft/memory_storage.py",
    "aspen/raft/kv.py",  # the state machine is pure too (deterministic apply)
]

FORBIDDEN = {
    "asyncio", "socket", "time", "os", "threading", "random", "selectors", "subprocess",
    "multiprocessing", "signal", "secrets", "uvloop", "aioquic", "aiohttp", "datetime",
}
# Aspen modules that are adapters or do I/O (a core must not reach them).
FORBIDDEN_ASPEN = {"aspen.clock", "aspen.raft.storage", "aspen.raft.worker", "aspen.testing"}


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """ids of Import nodes that sit under `if TYPE_CHECKING:`."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    for inner in ast.walk(sub):
                        inside.add(id(inner))
    return inside


def forbidden_imports(source: str) -> list[str]:
    tree = ast.parse(source)
    typing_only = _type_checking_blocks(tree)
    bad = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top == "random" and id(node) in typing_only:
                continue
            if top in FORBIDDEN or any(name == m or name.startswith(m + ".") for m in FORBIDDEN_ASPEN):
                bad.append(f"line {node.lineno}: {name}")
    return bad


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_io(module: str) -> None:
    path = ROOT / module
    assert path.exists(), f"{module} listed as a core but missing"
    assert forbidden_imports(path.read_text()) == []


def test_every_raft_core_module_is_listed() -> None:
    """A new pure module in aspen/raft must be added here (or to the adapter list) on purpose."""
    adapters = {"storage.py", "worker.py", "segment_log.py", "__init__.py"}  # do file I/O
    present = {p.name for p in (ROOT / "aspen/raft").glob("*.py")}
    listed = {Path(m).name for m in CORE_MODULES}
    assert present - listed - adapters == set()


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import time\n", True),
        ("import os.path\n", True),
        ("from asyncio import Queue\n", True),
        ("import random\n", True),
        ("from random import Random\n", True),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\n", False),
        ("import msgspec\nfrom aspen.raft.types import Entry\n", False),
        ("from aspen.clock import MonotonicClock\n", True),
        ("def f():\n    import socket\n", True),
    ],
)
def test_checker_itself(source: str, bad: bool) -> None:
    assert bool(forbidden_imports(source)) is bad
