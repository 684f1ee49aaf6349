"""The linearizability checker: known verdicts, explanations, budgets, and a property test.

Each NON-linearizable history below is a classic anomaly a broken Raft KV produces (stale read,
lost write, double CAS, phantom value, time travel, torn SetMulti); each linearizable one is a
near miss that a too-strict checker would reject.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aspen.raft.kv import (
    CasResult,
    CompareAndSwap,
    Delete,
    Get,
    GetResult,
    KvCommand,
    KvStateMachine,
    Rejected,
    Scan,
    ScanResult,
    Set,
    SetMulti,
    WriteResult,
    encode_command,
)
from aspen.testing.linearizability import CheckResult, Operation, check_history


def op(client: int, call: int, ret: int | None, command: KvCommand, output: object = None) -> Operation:
    return Operation(client_id=client, call_ms=call, return_ms=ret, input=command, output=output)  # type: ignore[arg-type]


def verdict(ops: list[Operation]) -> CheckResult:
    result = check_history(ops)
    assert not result.timed_out, result.explanation
    return result


# --- linearizable ------------------------------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    assert verdict([
        op(1, 0, 10, Set("x", "1"), WriteResult(None)),
        op(2, 20, 30, Get("x"), GetResult("1")),
        op(1, 40, 50, Delete("x"), WriteResult("1")),
        op(2, 60, 70, Get("x"), GetResult(None)),
    ]).ok


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ["1", None]:
        assert verdict([
            op(1, 0, 100, Set("x", "1"), WriteResult(None)),
            op(2, 10, 20, Get("x"), GetResult(seen)),
        ]).ok


def test_touching_intervals_count_as_concurrent() -> None:
    assert verdict([
        op(1, 0, 10, Set("x", "1"), WriteResult(None)),
        op(2, 10, 20, Get("x"), GetResult(None)),  # called in the same ms the write returned
    ]).ok


def test_writes_may_linearize_in_either_order_when_concurrent() -> None:
    assert verdict([
        op(1, 0, 50, Set("x", "a"), None),
        op(2, 0, 50, Set("x", "b"), None),
        op(3, 60, 70, Get("x"), GetResult("a")),
        op(4, 80, 90, Get("x"), GetResult("a")),
    ]).ok


def test_pending_write_may_or_may_not_have_happened() -> None:
    for seen in ["1", None]:
        assert verdict([
            op(1, 0, None, Set("x", "1")),
            op(2, 50, 60, Get("x"), GetResult(seen)),
        ]).ok
    # ...and it may take effect long after its call, between two reads.
    assert verdict([
        op(1, 0, None, Set("x", "1")),
        op(2, 50, 60, Get("x"), GetResult(None)),
        op(2, 70, 80, Get("x"), GetResult("1")),
    ]).ok


def test_rejected_operations_had_no_effect() -> None:
    assert verdict([
        op(1, 0, 10, Set("x", "1"), Rejected("too big")),
        op(2, 20, 30, Get("x"), GetResult(None)),
    ]).ok


def test_independent_keys_are_checked_separately() -> None:
    ops = []
    for k in range(30):  # 30 keys x 6 ops: 30 small searches instead of one over 180 ops
        key = f"k{k}"
        ops += [op(c, 0, 100, Set(key, f"v{c}"), None) for c in range(4)]
        ops += [op(9, 200, 210, Get(key), GetResult("v2")), op(9, 220, 230, Get(key), GetResult("v2"))]
    result = verdict(ops)
    assert result.ok and result.components == 30


def test_scan_and_setmulti_span_keys() -> None:
    assert verdict([
        op(1, 0, 10, SetMulti([("a/1", "x"), ("a/2", "y")]), WriteResult()),
        op(2, 5, 15, Scan("a/"), ScanResult([], None)),  # concurrent: before the SetMulti
        op(2, 20, 30, Scan("a/"), ScanResult([("a/1", "x"), ("a/2", "y")], None)),
        op(3, 20, 30, Scan("a/", 1), ScanResult([("a/1", "x")], "a/1")),
        op(3, 40, 50, Scan("a/", 1, "a/1"), ScanResult([("a/2", "y")], None)),
        op(4, 0, 60, CompareAndSwap("a/1", "x", None), CasResult(True, None)),
        op(5, 70, 80, Scan("a/"), ScanResult([("a/2", "y")], None)),
        op(5, 70, 80, Scan("zz"), ScanResult([], None)),  # covers no key: an empty store
    ]).ok


# --- NOT linearizable -------------------------------------------------------------------------


def test_stale_read_after_a_completed_write() -> None:
    result = verdict([
        op(1, 0, 10, Set("x", "1"), WriteResult(None)),
        op(2, 20, 30, Get("x"), GetResult(None)),
    ])
    assert not result.ok
    assert result.failing_keys == ("x",)
    assert result.stuck_op is not None and result.stuck_op.input == Get("x")
    assert "GetResult(value='1')" in result.explanation  # what the model would have answered


def test_lost_write() -> None:
    assert not verdict([
        op(1, 0, 10, Set("x", "1"), None),
        op(1, 20, 30, Set("x", "2"), None),
        op(2, 40, 50, Get("x"), GetResult("1")),
    ]).ok


def test_cas_double_success() -> None:
    assert not verdict([
        op(1, 0, 10, Set("x", "0"), WriteResult(None)),
        op(2, 20, 40, CompareAndSwap("x", "0", "a"), CasResult(True, "a")),
        op(3, 20, 40, CompareAndSwap("x", "0", "b"), CasResult(True, "b")),
    ]).ok
    assert verdict([  # the honest outcome: one wins, the other sees the winner
        op(1, 0, 10, Set("x", "0"), WriteResult(None)),
        op(2, 20, 40, CompareAndSwap("x", "0", "a"), CasResult(True, "a")),
        op(3, 20, 40, CompareAndSwap("x", "0", "b"), CasResult(False, "a")),
    ]).ok


def test_read_of_a_value_never_written() -> None:
    assert not verdict([
        op(1, 0, 10, Set("x", "1"), None),
        op(2, 5, 15, Get("x"), GetResult("ghost")),
    ]).ok
    assert not verdict([op(2, 0, 5, Scan("x"), ScanResult([("xx", "ghost")], None))]).ok


def test_read_going_backwards_in_time() -> None:
    assert not verdict([
        op(1, 0, 100, Set("x", "1"), None),  # long write, concurrent with both reads
        op(2, 10, 20, Get("x"), GetResult("1")),
        op(3, 30, 40, Get("x"), GetResult(None)),  # saw the past after someone saw the future
    ]).ok


def test_pending_write_cannot_be_undone() -> None:
    assert not verdict([
        op(1, 0, None, Set("x", "1")),
        op(2, 50, 60, Get("x"), GetResult("1")),
        op(2, 70, 80, Get("x"), GetResult(None)),
    ]).ok


def test_scan_must_see_setmulti_atomically() -> None:
    assert not verdict([
        op(1, 0, 10, SetMulti([("a", "1"), ("b", "1")]), WriteResult()),
        op(2, 5, 15, Scan(""), ScanResult([("a", "1")], None)),
    ]).ok


def test_failure_in_one_component_is_reported_with_its_keys() -> None:
    ops = [op(1, 0, 10, Set(f"ok{k}", "v"), WriteResult(None)) for k in range(10)]
    ops += [op(1, 0, 10, Set("bad", "1"), WriteResult(None)),
            op(2, 20, 30, Get("bad"), GetResult("2"))]
    result = verdict(ops)
    assert not result.ok and result.failing_keys == ("bad",) and len(result.failing_ops) == 2
    assert len(result.longest_order) == 1
    assert result.minimal_ops == (ops[-1],)  # reading "2" is wrong whatever else happened


def test_failing_history_is_shrunk_to_its_core() -> None:
    ops = [op(c, 10 * c, 10 * c + 5, Set("x", f"v{c}"), None) for c in range(8)]
    ops += [op(20, 100, 105, Get("x"), GetResult("v7")),
            op(21, 110, 115, Get("x"), GetResult("v3")),  # time travel: v3 was overwritten
            op(22, 120, 125, Get("x"), GetResult("v7"))]
    result = verdict(ops)
    assert not result.ok
    # Once v3 was overwritten nothing can bring it back... and in fact a read of v3 with no
    # write of v3 before it is already impossible: the shrinking finds that one operation.
    assert result.minimal_ops == (ops[9],)
    assert "minimal failing history" in result.explanation


def test_step_budget_gives_timed_out_not_a_hang() -> None:
    # 11 concurrent writes of distinct values and a read no order can explain: the search
    # must try many orders (~68,000 steps), so a tiny budget runs out.
    ops = [op(c, 0, 100, Set("x", f"v{c}"), None) for c in range(11)]
    ops.append(op(99, 200, 210, Get("x"), GetResult("never")))
    result = check_history(ops, max_steps=500)
    assert result.timed_out and not result.ok and result.steps <= 501
    assert not check_history(ops).ok  # with the default budget the verdict comes


# --- property: atomic executions are always linearizable --------------------------------------

KEYS = ["a", "ab", "b", "c"]
VALUES = ["1", "2", "3"]
commands = st.one_of(
    st.builds(Set, st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(Delete, st.sampled_from(KEYS)),
    st.builds(Get, st.sampled_from(KEYS)),
    st.builds(CompareAndSwap, st.sampled_from(KEYS), st.sampled_from([None, *VALUES]),
              st.sampled_from([None, *VALUES])),
    st.builds(SetMulti, st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)),
                                 min_size=1, max_size=3)),
    st.builds(Scan, st.sampled_from(["", "a", "b", "x"]), st.integers(1, 3),
              st.sampled_from([None, "a", "ab"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(commands, st.integers(0, 40), st.integers(0, 40), st.integers(0, 9)),
                min_size=1, max_size=24),
       st.integers(0, 2**32 - 1))
def test_atomic_execution_with_random_intervals_is_linearizable(
        plan: list[tuple[KvCommand, int, int, int]], seed: int) -> None:
    """Run the commands one at a time on the real state machine at instants 100, 110, ...;
    give each an interval around its instant; drop some responses (sometimes after the
    effect, sometimes before: then the command never runs). Always linearizable."""
    rng = random.Random(seed)
    sm = KvStateMachine()
    ops: list[Operation] = []
    index = 0
    for n, (command, before_ms, after_ms, fate) in enumerate(plan):
        at_ms = 100 + 10 * n  # slack up to 40 ms each side: up to ~8 operations overlap
        if fate == 0:  # lost before it reached the log: never takes effect, no answer
            ops.append(op(rng.randrange(3), at_ms - before_ms, None, command))
            continue
        index += 1
        kv_result = sm.apply(index, encode_command(command))
        if fate == 1:  # took effect, answer lost
            ops.append(op(rng.randrange(3), at_ms - before_ms, None, command))
        elif fate == 2:  # answered, result not recorded
            ops.append(op(rng.randrange(3), at_ms - before_ms, at_ms + after_ms, command))
        else:
            ops.append(op(rng.randrange(3), at_ms - before_ms, at_ms + after_ms, command, kv_result))
    rng.shuffle(ops)  # the checker must not depend on input order
    result = check_history(ops)
    assert result.ok and not result.timed_out, result.explanation


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_corrupted_read_in_a_sequential_history_is_caught(seed: int) -> None:
    """Sequential history (no overlap) on one key; falsify one Get's answer: never linearizable."""
    rng = random.Random(seed)
    sm = KvStateMachine()
    ops: list[Operation] = []
    gets = []
    for n in range(12):
        choices: list[KvCommand] = [Set("k", rng.choice(VALUES)), Get("k"), Delete("k")]
        command = rng.choice(choices)
        ops.append(op(1, 10 * n, 10 * n + 5, command, sm.apply(n + 1, encode_command(command))))
        if isinstance(command, Get):
            gets.append(n)
    if not gets:
        return
    n = rng.choice(gets)
    wrong = "corrupt"
    ops[n] = op(1, 10 * n, 10 * n + 5, Get("k"), GetResult(wrong))
    assert not check_history(ops).ok
