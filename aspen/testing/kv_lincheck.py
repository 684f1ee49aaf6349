"""A small linearizability checker for single-key KV histories (Wing & Gong search, per key).

Used by the Raft simulator as a cross-check next to `aspen.testing.linearizability` (the full
checker): KV operations on different keys commute, so a history is linearizable iff each key's
sub-history is (P-compositionality, Horn & Kroening 2015), which keeps each search small.

Ops (`KvOp`): `put` (output: previous value), `cas` (output: (succeeded, current)), `get`
(output: value). `return_ms=None` means the outcome is unknown (the client timed out): such an
op may take effect at any point after its call, or never. Ops that definitely failed must not be
in the history at all.
"""

from __future__ import annotations

from dataclasses import dataclass

# Search states visited per key before giving up (the answer is then "unknown", reported as not
# ok so the seed gets looked at). guess: generous for the simulator's few dozen ops per key.
MAX_SEARCH_STATES = 2_000_000

# Ops on one key the search accepts (the memo is keyed by a bitmask of linearized ops).
# guess: the simulator produces well under this per key.
MAX_OPS_PER_KEY = 2000


@dataclass(frozen=True, slots=True)
class KvOp:
    """One client operation on one key, with virtual call/return times in ms."""

    client_id: int
    kind: str  # "put" | "cas" | "get"
    key: str
    value: str | None = None  # put: new value; cas: new value (None = delete)
    expected: str | None = None  # cas only
    output: object = None  # put: previous; cas: (succeeded, current); get: value
    call_ms: int = 0
    return_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    key: str = ""
    reason: str = ""


def _step(op: KvOp, state: str | None) -> tuple[bool, str | None]:
    """Apply `op` to `state`; (output matches, new state). Unknown outputs always match."""
    known = op.return_ms is not None
    if op.kind == "put":
        return (not known or op.output == state), op.value
    if op.kind == "cas":
        if state == op.expected:
            return (not known or op.output == (True, op.value)), op.value
        return (not known or op.output == (False, state)), state
    if op.kind == "get":
        return op.output == state, state
    raise ValueError(f"unknown op kind {op.kind!r}")


def _check_key(ops: list[KvOp]) -> bool | None:
    n = len(ops)
    inf = 1 << 62
    calls = [op.call_ms for op in ops]
    rets = [op.return_ms if op.return_ms is not None else inf for op in ops]
    required = 0
    for i, op in enumerate(ops):
        if op.return_ms is not None:
            required |= 1 << i
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[int, str | None]] = [(0, None)]
    while stack:
        done, state = stack.pop()
        if done & required == required:
            return True
        key = (done, state)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > MAX_SEARCH_STATES:
            return None
        # An op can go next only if it was called before every pending op returned.
        min_ret = min((rets[i] for i in range(n) if not done >> i & 1), default=inf)
        for i in range(n):
            if done >> i & 1 or calls[i] > min_ret:
                continue
            ok, new_state = _step(ops[i], state)
            if ok:
                stack.append((done | 1 << i, new_state))
    return False


def observed_values(ops: list[KvOp]) -> set[str | None]:
    """Every value some completed op returned, or some CAS expected."""
    seen: set[str | None] = set()
    for op in ops:
        if op.return_ms is not None:
            if op.kind == "cas":
                seen.add(op.output[1])  # type: ignore[index]
            else:
                seen.add(op.output)  # type: ignore[arg-type]
        if op.kind == "cas":
            seen.add(op.expected)
    return seen


def check_history(ops: list[KvOp]) -> CheckResult:
    """Is this KV history linearizable? Checks each key on its own.

    Values written must be unique per key. A write with an unknown outcome whose value nobody
    ever observed is dropped before the search: had it taken effect, the op linearized right
    after it would have observed its value (put returns the previous value, cas compares and
    returns the current one, get returns it), so it can only have been last or never applied,
    and either way removing it changes no output.
    """
    observed = observed_values(ops)
    by_key: dict[str, list[KvOp]] = {}
    for op in ops:
        if op.return_ms is None and op.kind != "get" and op.value not in observed:
            continue
        by_key.setdefault(op.key, []).append(op)
    for key, key_ops in sorted(by_key.items()):
        if len(key_ops) > MAX_OPS_PER_KEY:
            return CheckResult(False, key, f"{len(key_ops)} ops on one key: too many to search")
        verdict = _check_key(sorted(key_ops, key=lambda o: o.call_ms))
        if verdict is None:
            return CheckResult(False, key, "search budget exhausted")
        if not verdict:
            return CheckResult(False, key, "no linearization")
    return CheckResult(True)


__all__ = ["KvOp", "CheckResult", "check_history", "observed_values", "MAX_SEARCH_STATES"]
