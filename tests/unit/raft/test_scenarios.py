"""Data-driven Raft scenarios: tests/scenarios/raft/*.txt (etcd's interaction_test.go).

A file is a comment saying what it proves, then blocks of

    command args
    ----
    expected output, one message per line

separated by blank lines; `#` lines between blocks are comments. Each command is handled by
one `Env.cmd_*` method (tests/unit/raft/interaction_env.py, syntax in its docstring).
`pytest --rewrite` regenerates the expected output in place; review it as a diff.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.raft.interaction_env import Env

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "raft"


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: list[str]


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Blocks, and trailing comment lines."""
    lines = text.splitlines()
    blocks: list[Block] = []
    comments: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") or not line.strip():
            comments.append(line)
            i += 1
            continue
        command = line
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i + 1}: expected ---- after {command!r}")
        i += 1
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        while comments and not comments[0].strip() and blocks:
            comments.pop(0)
        blocks.append(Block(comments, command, expected))
        comments = []
    return blocks, comments


def render(blocks: list[Block], trailing: list[str]) -> str:
    out: list[str] = []
    for b in blocks:
        if out:
            out.append("")
        out.extend(b.comments)
        out.append(b.command)
        out.append("----")
        out.extend(b.expected)
    out.extend(trailing)
    return "\n".join(out).rstrip("\n") + "\n"


def run_file(path: Path, rewrite: bool) -> None:
    blocks, trailing = parse(path.read_text())
    env = Env()
    failures = []
    for b in blocks:
        command, *args = shlex.split(b.command)
        got = env.handle(command, args)
        if got != b.expected:
            failures.append((b.command, b.expected, got))
        b.expected = got
    if rewrite:
        path.write_text(render(blocks, trailing))
        return
    if failures:
        command, expected, got = failures[0]
        msg = "\n".join(["", f"{path.name}: {command}", "--- expected", *expected, "--- got", *got])
        pytest.fail(msg + f"\n({len(failures)} block(s) differ; run with --rewrite and review the diff)")


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path, rewrite: bool) -> None:
    run_file(path, rewrite)


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The runner can fail: a scenario whose expected output is wrong is reported."""
    bad = tmp_path / "bad.txt"
    bad.write_text("add-nodes 1\n----\nnot what happens\n")
    with pytest.raises(pytest.fail.Exception, match="expected"):
        run_file(bad, rewrite=False)
