"""The KV state machine: every command, limits, idempotent apply, snapshots, scan paging."""

from __future__ import annotations

import random

import msgspec
import pytest

from aspen.errors import LimitExceeded, StorageError, UsageError, WireDecodeError
from aspen.raft.kv import (
    MAX_KEY_SIZE,
    MAX_SCAN_LIMIT,
    MAX_SETMULTI_PAIRS,
    MAX_VALUE_SIZE,
    AlreadyApplied,
    CasResult,
    CompareAndSwap,
    Delete,
    Get,
    GetResult,
    KvCommand,
    KvResult,
    KvStateMachine,
    NoOp,
    Rejected,
    Scan,
    ScanResult,
    Set,
    SetMulti,
    WriteResult,
    decode_command,
    decode_json_command,
    decode_result,
    encode_command,
    encode_json_command,
    encode_result,
)
from aspen.raft.types import Entry, EntryKind


ALL_COMMANDS: list[KvCommand] = [Set("a", "b"), SetMulti([("a", "b")]), Delete("a"),
                                 CompareAndSwap("a", None, "c"), Get("a"), Scan("p", 10, "pa")]


class Driver:
    """A state machine plus the next log index, so tests read as a list of commands."""

    def __init__(self) -> None:
        self.sm = KvStateMachine()
        self.index = 0

    def do(self, command: KvCommand) -> object:
        self.index += 1
        return self.sm.apply(self.index, encode_command(command))


def test_set_get_delete() -> None:
    d = Driver()
    assert d.do(Set("a", "1")) == WriteResult(previous=None)
    assert d.do(Set("a", "2")) == WriteResult(previous="1")
    assert d.sm.read(Get("a")) == GetResult("2")
    assert d.do(Get("a")) == GetResult("2")  # reads may also go through the log
    assert d.do(Delete("a")) == WriteResult(previous="2")
    assert d.do(Delete("a")) == WriteResult(previous=None)
    assert d.sm.read(Get("a")) == GetResult(None)
    assert len(d.sm) == 0 and d.sm.data_size_bytes == 0


def test_setmulti_is_ordered_and_last_wins() -> None:
    d = Driver()
    assert d.do(SetMulti([("a", "1"), ("b", "2"), ("a", "3")])) == WriteResult()
    assert d.sm.get("a") == "3" and d.sm.get("b") == "2"
    assert d.sm.data_size_bytes == 4


def test_compare_and_swap() -> None:
    d = Driver()
    assert d.do(CompareAndSwap("k", None, "v1")) == CasResult(True, "v1")  # create if absent
    assert d.do(CompareAndSwap("k", None, "v2")) == CasResult(False, "v1")  # exists: fails
    assert d.do(CompareAndSwap("k", "nope", "v2")) == CasResult(False, "v1")
    assert d.do(CompareAndSwap("k", "v1", "v2")) == CasResult(True, "v2")
    assert d.do(CompareAndSwap("k", "v2", None)) == CasResult(True, None)  # CAS-delete
    assert d.sm.get("k") is None
    assert d.do(CompareAndSwap("k", None, None)) == CasResult(True, None)  # assert absent
    assert d.do(CompareAndSwap("k", "x", None)) == CasResult(False, None)
    assert len(d.sm) == 0


def test_oversized_key_and_value_raise_at_encode() -> None:
    oversized: list[KvCommand] = [Set("k" * (MAX_KEY_SIZE + 1), "v"), Set("k", "v" * (MAX_VALUE_SIZE + 1)),
                    Set("é" * (MAX_KEY_SIZE // 2 + 1), "v"),  # bytes, not characters
                    SetMulti([("k", "v")] * (MAX_SETMULTI_PAIRS + 1)),
                    CompareAndSwap("k", None, "v" * (MAX_VALUE_SIZE + 1)),
                    Scan(limit=MAX_SCAN_LIMIT + 1)]
    for command in oversized:
        with pytest.raises(LimitExceeded):
            encode_command(command)
    with pytest.raises(UsageError):
        encode_command(Set("", "v"))


def test_oversized_committed_entry_is_rejected_and_changes_nothing() -> None:
    d = Driver()
    d.do(Set("a", "1"))
    raw = msgspec.msgpack.encode(SetMulti([("b", "2"), ("é" * (MAX_KEY_SIZE // 2 + 1), "v")]))
    result = d.sm.apply(2, raw)
    assert isinstance(result, Rejected) and result.limit_name == "MAX_KEY_SIZE"
    assert d.sm.get("b") is None and len(d.sm) == 1  # atomic: the valid pair did not apply
    assert d.sm.applied_index == 2  # still consumed, like on every replica
    too_long = d.sm.apply(3, msgspec.msgpack.encode({"type": "Set", "key": "k" * (MAX_KEY_SIZE + 1), "value": "v"}))
    assert too_long == Rejected(reason=too_long.reason, limit_name="MAX_KEY_SIZE",  # type: ignore[union-attr]
                                value=MAX_KEY_SIZE + 1, limit=MAX_KEY_SIZE)
    garbage = d.sm.apply(4, b"\xc1garbage")
    assert isinstance(garbage, Rejected) and d.sm.applied_index == 4
    assert d.sm.rejected_count == 3 and len(d.sm) == 1


def test_decode_errors_are_clear() -> None:
    with pytest.raises(WireDecodeError, match="bad KV command"):
        decode_command(b"\x93\x01\x02")
    with pytest.raises(WireDecodeError, match=r"\$\.type"):
        decode_command(msgspec.msgpack.encode({"type": "Increment", "key": "a"}))
    # Bounds the decoder enforces come out as the named limit, measured.
    with pytest.raises(LimitExceeded, match="MAX_VALUE_SIZE exceeded: 1048577 > 1048576"):
        decode_command(msgspec.msgpack.encode({"type": "SetMulti", "pairs": [["a", "b"], ["c", "v" * (MAX_VALUE_SIZE + 1)]]}))
    with pytest.raises(LimitExceeded, match="MAX_SETMULTI_PAIRS"):
        decode_command(msgspec.msgpack.encode({"type": "SetMulti", "pairs": [["a", "b"]] * (MAX_SETMULTI_PAIRS + 1)}))
    for command in ALL_COMMANDS:
        assert decode_command(encode_command(command)) == command
    results: list[KvResult] = [WriteResult("x"), CasResult(False, None), GetResult("v"),
                               ScanResult([("a", "b")], "a"), Rejected("why"), NoOp(), AlreadyApplied(3)]
    for result in results:
        assert decode_result(encode_result(result)) == result


def test_apply_is_idempotent_by_index_and_rejects_gaps() -> None:
    d = Driver()
    first = d.do(Set("a", "1"))
    d.do(Set("a", "2"))
    assert d.sm.apply(1, encode_command(Set("a", "999"))) == first  # cached result, no change
    assert d.sm.get("a") == "2" and d.sm.applied_index == 2
    assert d.sm.apply(2, b"") == WriteResult(previous="1")
    with pytest.raises(UsageError, match="gap"):
        d.sm.apply(4, encode_command(Set("a", "3")))
    assert d.sm.apply(3, b"") == NoOp()
    for _ in range(1100):  # push index 1 out of the bounded result cache
        d.do(Set("b", "x"))
    assert d.sm.apply(1, b"") == AlreadyApplied(index=1)


def test_snapshot_restore_round_trip_and_no_double_apply() -> None:
    d = Driver()
    rng = random.Random(7)
    for i in range(500):
        d.do(Set(f"k{rng.randrange(200):03d}", f"v{i}"))
    d.do(Delete("k000"))
    image = d.sm.snapshot_bytes(membership=b"members")
    other = KvStateMachine()
    assert other.restore(image) == b"members"
    assert other.applied_index == d.sm.applied_index
    assert other.read(Scan(limit=MAX_SCAN_LIMIT)) == d.sm.read(Scan(limit=MAX_SCAN_LIMIT))
    assert other.data_size_bytes == d.sm.data_size_bytes
    # Re-delivering an already-included entry after a restart changes nothing.
    assert other.apply(d.index, encode_command(Set("k001", "again"))) == AlreadyApplied(d.index)
    assert other.get("k001") == d.sm.get("k001")
    with pytest.raises(StorageError):
        other.restore(b"\x01\x02")
    assert other.applied_index == d.sm.applied_index  # a failed restore leaves the state alone


def test_scan_pagination_prefix_and_order() -> None:
    d = Driver()
    rng = random.Random(3)
    keys = [f"app/{rng.randrange(10_000):05d}" for _ in range(2500)]
    for key in keys:
        d.do(Set(key, key.upper()))
    d.do(SetMulti([("apa", "x"), ("app", "y"), ("apq", "z"), ("b", "w")]))
    expected = sorted(set(keys))
    collected: list[str] = []
    after: str | None = None
    for _ in range(100):
        page = d.sm.read(Scan(prefix="app/", limit=97, after=after))
        assert isinstance(page, ScanResult)
        assert len(page.pairs) <= 97
        collected += [k for k, _ in page.pairs]
        if page.next_after is None:
            break
        after = page.next_after
    assert collected == expected
    assert all(v == k.upper() for k, v in d.sm.read(Scan("app/", 5)).pairs)  # type: ignore[union-attr]
    # An exact multiple of the limit ends with next_after=None only when nothing follows.
    assert d.sm.read(Scan("ap", 3)) == ScanResult([("apa", "x"), ("app", "y"), ("app/" + expected[0][4:], expected[0].upper())], "app/" + expected[0][4:])
    assert d.sm.read(Scan("b", 1)) == ScanResult([("b", "w")], None)
    assert d.sm.read(Scan("apq", 1)) == ScanResult([("apq", "z")], None)
    assert d.sm.read(Scan("zz")) == ScanResult([], None)
    assert d.sm.read(Scan("app/", 10, after="zzz")) == ScanResult([], None)
    assert d.sm.read(Scan("app/", 1, after="a")).pairs[0][0] == expected[0]  # type: ignore[union-attr]


def test_random_ops_against_a_dict_model() -> None:
    """Differential test: the chunked sorted index agrees with sorted(dict) under churn."""
    d = Driver()
    model: dict[str, str] = {}
    rng = random.Random(11)
    for i in range(6000):
        key = f"{rng.randrange(3000):04d}"
        if rng.random() < 0.4:
            d.do(Delete(key))
            model.pop(key, None)
        else:
            d.do(Set(key, str(i)))
            model[key] = str(i)
        if i % 1500 == 0:
            prefix = key[:2]
            got = d.sm.read(Scan(prefix, MAX_SCAN_LIMIT))
            assert got.pairs == sorted((k, v) for k, v in model.items() if k.startswith(prefix))  # type: ignore[union-attr]
    everything: list[tuple[str, str]] = []
    after = None
    while True:
        page = d.sm.read(Scan("", MAX_SCAN_LIMIT, after))
        everything += page.pairs  # type: ignore[union-attr]
        after = page.next_after  # type: ignore[union-attr]
        if after is None:
            break
    assert everything == sorted(model.items())


def test_rust_json_shape_round_trips() -> None:
    """The Rust Aspen's /write body: {"command": {"Set": {...}}} / {"SetMulti": {"pairs": [...]}}."""
    assert decode_json_command(b'{"Set":{"key":"k","value":"v"}}') == Set("k", "v")
    assert decode_json_command(b'{"SetMulti":{"pairs":[["k1","v1"],["k2","v2"]]}}') == \
        SetMulti([("k1", "v1"), ("k2", "v2")])
    for command in ALL_COMMANDS:
        assert decode_json_command(encode_json_command(command)) == command
    for bad in [b'{"Increment":{"key":"k"}}', b'{"Set":{"key":"k"}}', b"[1]", b"{}",
                b'{"Set":{"key":"k","value":"v"},"Delete":{"key":"k"}}']:
        with pytest.raises(WireDecodeError):
            decode_json_command(bad)
    with pytest.raises(LimitExceeded):
        decode_json_command(encode_json_command(Set("k" * 10, "v")).replace(b"k" * 10, b"k" * (MAX_KEY_SIZE + 1)))


def test_apply_entry_by_kind() -> None:
    sm = KvStateMachine()
    assert sm.apply_entry(Entry(term=1, index=1, kind=EntryKind.NOOP)) == NoOp()
    assert sm.apply_entry(Entry(term=1, index=2, kind=EntryKind.CONFIG, data=b"\x81membership")) == NoOp()
    assert sm.apply_entry(Entry(term=1, index=3, data=encode_command(Set("a", "1")))) == WriteResult(None)
    assert sm.applied_index == 3 and sm.get("a") == "1"


def test_replicas_agree_and_a_restart_replays_without_double_apply() -> None:
    """Two replicas applying the same log end byte-identical; a replica restarting from a
    snapshot replays the log from before the snapshot (compaction keeps a tail) and ends the
    same, because entries <= applied_index are skipped."""
    rng = random.Random(5)
    log: list[bytes] = []
    for i in range(3000):
        key = f"k{rng.randrange(300)}"
        choices: list[KvCommand] = [Set(key, str(i)), Delete(key), CompareAndSwap(key, str(i - 1), str(i)),
                                    SetMulti([(key, "m"), (f"{key}x", "n")]), Get(key)]
        log.append(encode_command(rng.choice(choices)))
    log[1000] = b"\xc1 not a command"  # a bad entry is rejected the same way everywhere
    a, b = KvStateMachine(), KvStateMachine()
    results_a = [a.apply(i, data) for i, data in enumerate(log, 1)]
    results_b = [b.apply(i, data) for i, data in enumerate(log, 1)]
    assert results_a == results_b and a.snapshot_bytes() == b.snapshot_bytes()

    c = KvStateMachine()
    for i, data in enumerate(log[:2000], 1):
        c.apply(i, data)
    image = c.snapshot_bytes()
    restarted = KvStateMachine()
    restarted.restore(image)
    for i, data in enumerate(log[1500:], 1501):  # the log kept 500 entries before the snapshot
        result = restarted.apply(i, data)
        if i <= 2000:
            assert result == AlreadyApplied(index=i)
    assert restarted.snapshot_bytes() == a.snapshot_bytes()
