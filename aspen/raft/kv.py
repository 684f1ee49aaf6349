"""The KV state machine that Raft replicates: commands, results, apply, reads and snapshots.

Rules (what this module promises the Raft worker and the checker):

- **Deterministic.** `KvStateMachine.apply(index, data)` depends only on the current state and the
  entry bytes: no clock, no randomness, no I/O. Every replica that applies the same committed
  log reaches the same state and returns the same results.
- **Idempotent by log index.** Entries must be applied in order: `index == applied_index + 1`.
  An `index <= applied_index` is a no-op returning the cached result (or `AlreadyApplied` once the
  bounded cache has forgotten it). A gap raises `UsageError` (the caller lost an entry).
  `applied_index` travels inside every snapshot, so a worker that restarts from a snapshot and
  re-applies the log after it never applies an entry twice.
- **Never raises on committed bytes.** A committed entry that does not decode, or breaks a limit,
  becomes a `Rejected` result and still advances `applied_index`: raising would crash-loop every
  replica on the same entry. The proposing side validates first: `encode_command` raises
  `LimitExceeded` or `UsageError` before anything reaches the log.
- **Atomic commands.** A command either applies completely or not at all (`SetMulti` checks every
  pair and the store quotas before touching the map).

Commands (tagged msgspec Structs, tag field `"type"`, tags are the Rust Aspen's names where it
has one, §2/§3 of the inventory): `Set`, `SetMulti` (atomic), `Delete`, `CompareAndSwap`, and the
reads `Get` and `Scan`. Reads normally go through `read()` after a ReadIndex round; they may also be
proposed through the log (`apply` answers them too), which the simulator uses.

`CompareAndSwap` semantics (the choice a user would expect, as in etcd's Txn and Consul's cas):
`expected=None` means "the key must be absent"; `new=None` means "delete the key" when the
comparison holds. `CompareAndSwap(key, expected=None, new=None)` is a pure "assert absent".
The result always carries the value *after* the operation (`current`), so a failed CAS tells the
client what to retry against.

Theory of operation: a dict holds the data; a chunked sorted key list (`_SortedKeys`, the
sortedcontainers idea: a list of bounded sorted chunks plus their maxima) gives ordered prefix
scans with O(log n + chunk) insert/delete instead of O(n) for one big sorted list.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated

import msgspec

from aspen.errors import LimitExceeded, StorageError, UsageError, WireDecodeError
from aspen.raft.types import Entry, EntryKind
from aspen.units import GiB, KiB, MiB

# --- limits -----------------------------------------------------------------------------------

# FoundationDB caps keys at 10,000 bytes and etcd/Kubernetes keys are paths far below 1 KiB;
# 4 KiB leaves room for deep orchestration paths while keeping scan pages and indexes small.
# guess: revisit.
MAX_KEY_SIZE = 4 * KiB
# etcd's default --max-request-bytes is 1.5 MiB; one value must fit in one request with its key
# and framing, so 1 MiB (Consul allows 512 KiB, FoundationDB 100 kB).
MAX_VALUE_SIZE = 1 * MiB
# etcd's default request limit (--max-request-bytes = 1.5 MiB): the encoded command of one log
# entry. Well under MAX_RPC_MESSAGE_SIZE (10 MiB) so one AppendEntries carries several entries.
MAX_COMMAND_SIZE = 3 * MiB // 2
# etcd's default --max-txn-ops is 128 operations per transaction.
MAX_SETMULTI_PAIRS = 128
# Kubernetes lists in chunks of 500 and etcd has no default; 1000 pairs per page. guess: revisit.
MAX_SCAN_LIMIT = 1000
# A scan page stops before its pairs pass this many key+value bytes (at least one pair is always
# returned): 4 MiB keeps a reply well inside MAX_RPC_MESSAGE_SIZE (10 MiB) even with one maximal
# value on top.
MAX_SCAN_RESPONSE_SIZE = 4 * MiB
# etcd's default backend quota (--quota-backend-bytes) is 2 GiB: the sum of key and value bytes.
MAX_KV_DATA_SIZE = 2 * GiB
# A dict entry with two short str costs ~200 B in CPython, so 10 M keys is ~2 GiB of RAM, the
# same order as MAX_KV_DATA_SIZE. guess: revisit.
MAX_KV_KEYS = 10_000_000
# Results of the most recent applies kept for re-delivery after a duplicate apply (the worker
# re-sending a batch); older duplicates get `AlreadyApplied`. guess: revisit.
MAX_CACHED_RESULTS = 1024
# Keys per chunk of the sorted index; sortedcontainers uses a load factor of 1000. Chunks split
# at twice this size, so an insert moves at most ~1000 pointers.
_SORTED_CHUNK_SIZE = 512
# A snapshot holds at most MAX_KV_DATA_SIZE of strings plus msgpack overhead per pair (~10 B).
MAX_KV_SNAPSHOT_SIZE = MAX_KV_DATA_SIZE + 16 * MAX_KV_KEYS + 1 * MiB

# Bounds in the types are in *characters* (what msgspec can check while decoding); a character is
# at least one UTF-8 byte, so they reject nothing that the byte limits accept. The byte limits
# are then checked by `validate_command`.
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_SIZE)]
Value = Annotated[str, msgspec.Meta(max_length=MAX_VALUE_SIZE)]
Prefix = Annotated[str, msgspec.Meta(max_length=MAX_KEY_SIZE)]

# --- commands ---------------------------------------------------------------------------------


class Set(msgspec.Struct, tag="Set", frozen=True):
    """Upsert one pair (the Rust Aspen's `Set {key, value}`). Result: `WriteResult(previous)`."""

    key: Key
    value: Value


class SetMulti(msgspec.Struct, tag="SetMulti", frozen=True):
    """Upsert several pairs atomically (the Rust Aspen's `SetMulti {pairs}`).

    Pairs apply in order, so a repeated key ends with its last value. Result: `WriteResult()`.
    """

    pairs: Annotated[list[tuple[Key, Value]], msgspec.Meta(max_length=MAX_SETMULTI_PAIRS)]


class Delete(msgspec.Struct, tag="Delete", frozen=True):
    """Remove a key (absent is fine). Result: `WriteResult(previous)`."""

    key: Key


class CompareAndSwap(msgspec.Struct, tag="CompareAndSwap", frozen=True):
    """Set `key` to `new` iff its current value equals `expected`.

    `expected=None`: the key must be absent. `new=None`: delete on success.
    Result: `CasResult(succeeded, current)` with `current` the value after the operation.
    """

    key: Key
    expected: Value | None
    new: Value | None


class Get(msgspec.Struct, tag="Get", frozen=True):
    """Read one key. Result: `GetResult(value)` (None when absent)."""

    key: Key


class Scan(msgspec.Struct, tag="Scan", frozen=True):
    """Read pairs whose key starts with `prefix`, in key order, after `after` (exclusive).

    At most `limit` pairs and about MAX_SCAN_RESPONSE_SIZE bytes per page; pass the returned
    `next_after` as `after` to get the next page. Result: `ScanResult(pairs, next_after)`.
    """

    prefix: Prefix = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SCAN_LIMIT)] = MAX_SCAN_LIMIT
    after: Prefix | None = None


KvCommand = Set | SetMulti | Delete | CompareAndSwap | Get | Scan
KvWrite = Set | SetMulti | Delete | CompareAndSwap
KvRead = Get | Scan

# --- results ----------------------------------------------------------------------------------


class WriteResult(msgspec.Struct, tag="WriteResult", frozen=True):
    """A write applied. `previous` is the value before it (Set/Delete); None for SetMulti."""

    previous: str | None = None


class CasResult(msgspec.Struct, tag="CasResult", frozen=True):
    """Outcome of a CompareAndSwap; `current` is the value after it (None = absent)."""

    succeeded: bool
    current: str | None


class GetResult(msgspec.Struct, tag="GetResult", frozen=True):
    """The value of a key, or None when it is absent."""

    value: str | None


class ScanResult(msgspec.Struct, tag="ScanResult", frozen=True):
    """One page of a scan, in key order; `next_after` is set iff more matching keys exist."""

    pairs: list[tuple[str, str]]
    next_after: str | None = None


class Rejected(msgspec.Struct, tag="Rejected", frozen=True):
    """A committed entry that could not be applied; nothing changed (deterministic everywhere).

    `limit_name`/`value`/`limit` are set when a named limit was exceeded (as in LimitExceeded).
    """

    reason: str
    limit_name: str = ""
    value: int = 0
    limit: int = 0


class NoOp(msgspec.Struct, tag="NoOp", frozen=True):
    """An empty entry (a new leader's blank entry, a membership entry) advanced applied_index."""


class AlreadyApplied(msgspec.Struct, tag="AlreadyApplied", frozen=True):
    """`index` was applied before and its result is no longer cached; nothing changed."""

    index: int


KvResult = WriteResult | CasResult | GetResult | ScanResult | Rejected | NoOp | AlreadyApplied

# --- encoding ---------------------------------------------------------------------------------

_COMMAND_ENCODER = msgspec.msgpack.Encoder()
_COMMAND_DECODER: msgspec.msgpack.Decoder[KvCommand] = msgspec.msgpack.Decoder(KvCommand)
_RESULT_ENCODER = msgspec.msgpack.Encoder()
_RESULT_DECODER: msgspec.msgpack.Decoder[KvResult] = msgspec.msgpack.Decoder(KvResult)


def _utf8_size(text: str) -> int:
    # isascii() is O(1) on CPython's compact strings and the common case.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def validate_command(command: KvCommand) -> None:
    """Check the byte limits that the decoder's character bounds cannot.

    Raises LimitExceeded (MAX_KEY_SIZE, MAX_VALUE_SIZE, MAX_SETMULTI_PAIRS, MAX_SCAN_LIMIT) or
    UsageError (empty key, scan limit < 1).
    """
    match command:
        case Set(key=key, value=value):
            _check_key(key)
            _check_value(value)
        case SetMulti(pairs=pairs):
            if len(pairs) > MAX_SETMULTI_PAIRS:
                raise LimitExceeded("MAX_SETMULTI_PAIRS", len(pairs), MAX_SETMULTI_PAIRS)
            for key, value in pairs:
                _check_key(key)
                _check_value(value)
        case Delete(key=key) | Get(key=key):
            _check_key(key)
        case CompareAndSwap(key=key, expected=expected, new=new):
            _check_key(key)
            if expected is not None:
                _check_value(expected)
            if new is not None:
                _check_value(new)
        case Scan(prefix=prefix, limit=limit, after=after):
            if _utf8_size(prefix) > MAX_KEY_SIZE:
                raise LimitExceeded("MAX_KEY_SIZE", _utf8_size(prefix), MAX_KEY_SIZE)
            if after is not None and _utf8_size(after) > MAX_KEY_SIZE:
                raise LimitExceeded("MAX_KEY_SIZE", _utf8_size(after), MAX_KEY_SIZE)
            if limit > MAX_SCAN_LIMIT:
                raise LimitExceeded("MAX_SCAN_LIMIT", limit, MAX_SCAN_LIMIT)
            if limit < 1:
                raise UsageError(f"scan limit must be >= 1, got {limit}")
        case _:
            raise UsageError(f"not a KV command: {type(command).__name__}")


def _check_key(key: str) -> None:
    if not key:
        raise UsageError("KV keys must not be empty")
    size_bytes = _utf8_size(key)
    if size_bytes > MAX_KEY_SIZE:
        raise LimitExceeded("MAX_KEY_SIZE", size_bytes, MAX_KEY_SIZE)


def _check_value(value: str) -> None:
    size_bytes = _utf8_size(value)
    if size_bytes > MAX_VALUE_SIZE:
        raise LimitExceeded("MAX_VALUE_SIZE", size_bytes, MAX_VALUE_SIZE)


def encode_command(command: KvCommand) -> bytes:
    """The log-entry bytes of `command`, after validating it.

    Call this on the proposing side: it raises LimitExceeded (key/value/pairs/command size) or
    UsageError before anything reaches the log, so committed entries are valid in practice.
    """
    validate_command(command)
    data = _COMMAND_ENCODER.encode(command)
    if len(data) > MAX_COMMAND_SIZE:
        raise LimitExceeded("MAX_COMMAND_SIZE", len(data), MAX_COMMAND_SIZE)
    return data


_LENGTH_ERROR = re.compile(
    r"^Expected `(str|array)` of length <= (\d+) - at `\$((?:\.\w+|\[\d+\])*)`$")
_PATH_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")
_LENGTH_LIMITS = {("str", MAX_KEY_SIZE): "MAX_KEY_SIZE", ("str", MAX_VALUE_SIZE): "MAX_VALUE_SIZE",
                  ("array", MAX_SETMULTI_PAIRS): "MAX_SETMULTI_PAIRS"}


def _decode_error(exc: msgspec.DecodeError, raw: object,
                  what: str) -> LimitExceeded | WireDecodeError:
    """Turn a decoder's length-bound violation into the LimitExceeded it is (measuring the
    offending field in `raw`, the untyped decode); anything else is a WireDecodeError."""
    match = _LENGTH_ERROR.match(str(exc))
    if match and (match.group(1), int(match.group(2))) in _LENGTH_LIMITS:
        kind, limit = match.group(1), int(match.group(2))
        node = raw
        try:
            for name, position in _PATH_STEP.findall(match.group(3)):
                node = node[name] if name else node[int(position)]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            node = None
        size = (_utf8_size(node) if isinstance(node, str) else len(node)  # type: ignore[arg-type]
                if node is not None else limit + 1)
        return LimitExceeded(_LENGTH_LIMITS[(kind, limit)], size, limit)
    return WireDecodeError(f"{what}: {exc}")


def decode_command(data: bytes) -> KvCommand:
    """Decode and validate one command; WireDecodeError for bad bytes, LimitExceeded for limits."""
    if len(data) > MAX_COMMAND_SIZE:
        raise LimitExceeded("MAX_COMMAND_SIZE", len(data), MAX_COMMAND_SIZE)
    try:
        command = _COMMAND_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise _decode_error(exc, _untyped(msgspec.msgpack.decode, data), "bad KV command") from exc
    validate_command(command)
    return command


def _untyped(decode: Callable[[bytes], object], data: bytes) -> object:
    try:
        return decode(data)
    except msgspec.DecodeError:
        return None


# The Rust Aspen's HTTP shape is serde's external tagging: {"Set": {"key": "k", "value": "v"}}.
_COMMAND_TYPES: dict[str, type[KvCommand]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (Set, SetMulti, Delete, CompareAndSwap, Get, Scan)
}
_JSON_OBJECT_DECODER = msgspec.json.Decoder(dict[str, dict[str, object]])


def decode_json_command(data: bytes) -> KvCommand:
    """Decode the Rust Aspen's JSON form of a command, `{"Set": {"key": "k", "value": "v"}}`
    (its `/write` body's `command`), validated like `decode_command`; WireDecodeError if bad."""
    if len(data) > MAX_COMMAND_SIZE:
        raise LimitExceeded("MAX_COMMAND_SIZE", len(data), MAX_COMMAND_SIZE)
    try:
        outer = _JSON_OBJECT_DECODER.decode(data)
        if len(outer) != 1:
            raise WireDecodeError(
                f"a command is one {{\"Tag\": {{...}}}} object, got {len(outer)} keys")
        ((tag, fields),) = outer.items()
        cls = _COMMAND_TYPES.get(tag)
        if cls is None:
            raise WireDecodeError(
                f"unknown command {tag!r}; expected one of {sorted(_COMMAND_TYPES)}")
        command: KvCommand = msgspec.convert(fields, type=cls)
    except msgspec.ValidationError as exc:
        raw = _untyped(msgspec.json.decode, data)
        inner = next(iter(raw.values()), None) if isinstance(raw, dict) and len(raw) == 1 else None
        raise _decode_error(exc, inner, "bad KV command JSON") from exc
    except msgspec.MsgspecError as exc:
        raise WireDecodeError(f"bad KV command JSON: {exc}") from exc
    validate_command(command)
    return command


def encode_json_command(command: KvCommand) -> bytes:
    """The Rust Aspen's JSON form of `command` (inverse of `decode_json_command`)."""
    fields = msgspec.to_builtins(command)
    del fields["type"]
    return msgspec.json.encode({type(command).__struct_config__.tag: fields})


def encode_result(result: KvResult) -> bytes:
    """The bytes of a result (to cross the worker/I-O process ring)."""
    return _RESULT_ENCODER.encode(result)


def decode_result(data: bytes) -> KvResult:
    """Decode a result; WireDecodeError for bad bytes."""
    try:
        return _RESULT_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad KV result: {exc}") from exc


# --- scans ------------------------------------------------------------------------------------


def scan_page(items: Iterable[tuple[str, str]], scan: Scan) -> ScanResult:
    """One page of `scan` over `items`, which must be sorted by key.

    Keys before the scan's start (below `prefix`, or not after `after`) are skipped, so callers
    may pass every pair or an iterator already positioned at the start. Shared with the
    linearizability checker's model so both agree on paging rules.
    """
    prefix, after = scan.prefix, scan.after
    pairs: list[tuple[str, str]] = []
    page_size_bytes = 0
    for key, value in items:
        if key < prefix or (after is not None and key <= after):
            continue
        if not key.startswith(prefix):
            break  # sorted: every later key is past the prefix range too
        if len(pairs) >= scan.limit:
            return ScanResult(pairs=pairs, next_after=pairs[-1][0])
        pair_size_bytes = _utf8_size(key) + _utf8_size(value)
        if pairs and page_size_bytes + pair_size_bytes > MAX_SCAN_RESPONSE_SIZE:
            return ScanResult(pairs=pairs, next_after=pairs[-1][0])
        pairs.append((key, value))
        page_size_bytes += pair_size_bytes
    return ScanResult(pairs=pairs, next_after=None)


class _SortedKeys:
    """A sorted set of str as bounded sorted chunks (the sortedcontainers layout).

    The caller keeps membership (the dict): `add` is only called for absent keys and `remove`
    only for present ones.
    """

    def __init__(self, sorted_keys: list[str] | None = None) -> None:
        keys = sorted_keys or []
        self._chunks: list[list[str]] = [keys[i:i + _SORTED_CHUNK_SIZE]
                                         for i in range(0, len(keys), _SORTED_CHUNK_SIZE)]
        self._maxes: list[str] = [chunk[-1] for chunk in self._chunks]

    def add(self, key: str) -> None:
        if not self._chunks:
            self._chunks.append([key])
            self._maxes.append(key)
            return
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            i -= 1
            chunk = self._chunks[i]
            chunk.append(key)
            self._maxes[i] = key
        else:
            chunk = self._chunks[i]
            insort(chunk, key)
        if len(chunk) > 2 * _SORTED_CHUNK_SIZE:
            upper = chunk[_SORTED_CHUNK_SIZE:]
            del chunk[_SORTED_CHUNK_SIZE:]
            self._chunks.insert(i + 1, upper)
            self._maxes[i] = chunk[-1]
            self._maxes.insert(i + 1, upper[-1])

    def remove(self, key: str) -> None:
        i = bisect_left(self._maxes, key)
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        del chunk[j]
        if not chunk:
            del self._chunks[i]
            del self._maxes[i]
        elif j == len(chunk):
            self._maxes[i] = chunk[-1]

    def iter_from(self, start: str, *, inclusive: bool) -> Iterator[str]:
        """Keys >= start (inclusive) or > start, in order."""
        find = bisect_left if inclusive else bisect_right
        i = find(self._maxes, start)
        if i == len(self._chunks):
            return
        chunk = self._chunks[i]
        yield from chunk[find(chunk, start):]
        for chunk in self._chunks[i + 1:]:
            yield from chunk

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            yield from chunk


# --- snapshots --------------------------------------------------------------------------------


class KvSnapshot(msgspec.Struct, tag="KvSnapshotV1", frozen=True, array_like=True):
    """The image `snapshot_bytes()` writes: applied index, the caller's membership blob, and the
    pairs as two parallel lists sorted by key (cheaper to encode than a list of pairs)."""

    applied_index: Annotated[int, msgspec.Meta(ge=0)]
    membership: bytes
    keys: Annotated[list[str], msgspec.Meta(max_length=MAX_KV_KEYS)]
    values: Annotated[list[str], msgspec.Meta(max_length=MAX_KV_KEYS)]


_SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(KvSnapshot)

# --- the state machine ------------------------------------------------------------------------


class KvStateMachine:
    """The replicated map. Fed committed entries in log order by the Raft worker.

    Contract:
    - `apply(index, data)` for every committed entry, in order, exactly `applied_index + 1`
      (empty `data` = a blank/membership entry: returns NoOp). Returns a KvResult, never raises
      for the entry's content; raises UsageError for an index gap.
    - `read(Get | Scan)` answers from the applied state (linearizable only after the caller's
      ReadIndex round has seen `applied_index >= read_index`).
    - `snapshot_bytes(membership)` / `restore(data) -> membership`: a consistent image at
      `applied_index`; `membership` is an opaque blob owned by the Raft core (its encoded
      membership at that index), stored and handed back verbatim.
    """

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._keys = _SortedKeys()
        self._applied_index = 0
        self._data_size_bytes = 0
        self._results: dict[int, KvResult] = {}
        self.rejected_count = 0

    @property
    def applied_index(self) -> int:
        """The index of the last applied entry (0 = nothing applied)."""
        return self._applied_index

    @property
    def data_size_bytes(self) -> int:
        """Sum of UTF-8 key and value sizes, bounded by MAX_KV_DATA_SIZE."""
        return self._data_size_bytes

    def __len__(self) -> int:
        return len(self._data)

    def apply(self, index: int, data: bytes) -> KvResult:
        """Apply committed entry `index`; a no-op for `index <= applied_index` (see class doc)."""
        if index <= self._applied_index:
            cached = self._results.get(index)
            return cached if cached is not None else AlreadyApplied(index=index)
        if index != self._applied_index + 1:
            raise UsageError(f"apply gap: index {index} after applied_index {self._applied_index}")
        result = self._execute(data)
        self._applied_index = index
        # Indexes are consecutive, so the entry MAX_CACHED_RESULTS back is the oldest one.
        self._results[index] = result
        self._results.pop(index - MAX_CACHED_RESULTS, None)
        return result

    def apply_entry(self, entry: Entry) -> KvResult:
        """Apply a committed Raft entry: NORMAL entries carry a command; NOOP and CONFIG entries
        (membership is the core's business) only advance applied_index and return NoOp."""
        if entry.kind == EntryKind.NORMAL:
            return self.apply(entry.index, entry.data)
        return self.apply(entry.index, b"")

    def read(self, command: KvRead) -> GetResult | ScanResult:
        """Answer a read from the applied state. Raises LimitExceeded/UsageError on bad input."""
        validate_command(command)
        if isinstance(command, Get):
            return GetResult(value=self._data.get(command.key))
        return self._scan(command)

    def get(self, key: str) -> str | None:
        """The applied value of `key` (a convenience for tests and the HTTP layer)."""
        return self._data.get(key)

    def _execute(self, data: bytes) -> KvResult:
        if not data:
            return NoOp()
        try:
            if len(data) > MAX_COMMAND_SIZE:
                raise LimitExceeded("MAX_COMMAND_SIZE", len(data), MAX_COMMAND_SIZE)
            try:
                command = _COMMAND_DECODER.decode(data)
            except msgspec.DecodeError as exc:
                raise _decode_error(exc, _untyped(msgspec.msgpack.decode, data),
                                    "bad KV command") from exc
            if type(command) is Set:
                return self._set(command.key, command.value)  # the hot path, validated inline
            validate_command(command)
            return self._execute_command(command)
        except LimitExceeded as exc:
            self.rejected_count += 1
            return Rejected(reason=str(exc), limit_name=exc.name, value=exc.value, limit=exc.limit)
        except (WireDecodeError, UsageError) as exc:
            self.rejected_count += 1
            return Rejected(reason=str(exc))

    def _set(self, key: str, value: str) -> WriteResult:
        """Set with each string measured once (validation, quota and accounting share sizes)."""
        key_size = len(key) if key.isascii() else len(key.encode("utf-8"))
        value_size = len(value) if value.isascii() else len(value.encode("utf-8"))
        if key_size > MAX_KEY_SIZE:
            raise LimitExceeded("MAX_KEY_SIZE", key_size, MAX_KEY_SIZE)
        if value_size > MAX_VALUE_SIZE:
            raise LimitExceeded("MAX_VALUE_SIZE", value_size, MAX_VALUE_SIZE)
        data = self._data
        previous = data.get(key)
        if previous is None:
            size_bytes = self._data_size_bytes + key_size + value_size
            if len(data) >= MAX_KV_KEYS:
                raise LimitExceeded("MAX_KV_KEYS", len(data) + 1, MAX_KV_KEYS)
        else:
            size_bytes = self._data_size_bytes + value_size - _utf8_size(previous)
        if size_bytes > MAX_KV_DATA_SIZE:
            raise LimitExceeded("MAX_KV_DATA_SIZE", size_bytes, MAX_KV_DATA_SIZE)
        if previous is None:
            self._keys.add(key)
        data[key] = value
        self._data_size_bytes = size_bytes
        return WriteResult(previous=previous)

    def _execute_command(self, command: KvCommand) -> KvResult:
        match command:
            case Set(key=key, value=value):
                return self._set(key, value)
            case SetMulti(pairs=pairs):
                self._check_quota(pairs)  # before any change: all or nothing
                for key, value in pairs:
                    self._put(key, value, self._data.get(key))
                return WriteResult()
            case Delete(key=key):
                previous = self._data.get(key)
                if previous is not None:
                    self._remove(key, previous)
                return WriteResult(previous=previous)
            case CompareAndSwap(key=key, expected=expected, new=new):
                current = self._data.get(key)
                if current != expected:
                    return CasResult(succeeded=False, current=current)
                if new is None:
                    if current is not None:
                        self._remove(key, current)
                else:
                    self._check_quota([(key, new)])
                    self._put(key, new, current)
                return CasResult(succeeded=True, current=new)
            case Get(key=key):
                return GetResult(value=self._data.get(key))
            case Scan():
                return self._scan(command)
            case _:  # pragma: no cover - the decoder only yields the union above
                raise UsageError(f"not a KV command: {type(command).__name__}")

    def _check_quota(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Raise LimitExceeded if writing `pairs` would pass MAX_KV_DATA_SIZE or MAX_KV_KEYS."""
        size_bytes = self._data_size_bytes
        keys = len(self._data)
        seen: dict[str, str | None] = {}
        for key, value in pairs:
            old = seen[key] if key in seen else self._data.get(key)
            if old is None:
                keys += 1
                size_bytes += _utf8_size(key) + _utf8_size(value)
            else:
                size_bytes += _utf8_size(value) - _utf8_size(old)
            seen[key] = value
        if keys > MAX_KV_KEYS:
            raise LimitExceeded("MAX_KV_KEYS", keys, MAX_KV_KEYS)
        if size_bytes > MAX_KV_DATA_SIZE:
            raise LimitExceeded("MAX_KV_DATA_SIZE", size_bytes, MAX_KV_DATA_SIZE)

    def _put(self, key: str, value: str, previous: str | None) -> None:
        if previous is None:
            self._keys.add(key)
            self._data_size_bytes += _utf8_size(key) + _utf8_size(value)
        else:
            self._data_size_bytes += _utf8_size(value) - _utf8_size(previous)
        self._data[key] = value

    def _remove(self, key: str, previous: str) -> None:
        del self._data[key]
        self._keys.remove(key)
        self._data_size_bytes -= _utf8_size(key) + _utf8_size(previous)

    def _scan(self, scan: Scan) -> ScanResult:
        if scan.after is not None and scan.after >= scan.prefix:
            keys = self._keys.iter_from(scan.after, inclusive=False)
        else:
            keys = self._keys.iter_from(scan.prefix, inclusive=True)
        data = self._data
        return scan_page(((key, data[key]) for key in keys), scan)

    def snapshot_bytes(self, membership: bytes = b"") -> bytes:
        """A consistent image of the state at `applied_index`, with `membership` stored verbatim."""
        keys = list(self._keys)
        data = self._data
        image = KvSnapshot(applied_index=self._applied_index, membership=membership,
                           keys=keys, values=[data[key] for key in keys])
        return _SNAPSHOT_ENCODER.encode(image)

    def restore(self, data: bytes) -> bytes:
        """Replace the whole state with a snapshot image; returns its membership blob.

        Raises StorageError if the image is malformed (it passed the storage checksum, so this is
        a bug or a version mismatch, never something to skip) or LimitExceeded if it is too big.
        On error the current state is left unchanged.
        """
        if len(data) > MAX_KV_SNAPSHOT_SIZE:
            raise LimitExceeded("MAX_KV_SNAPSHOT_SIZE", len(data), MAX_KV_SNAPSHOT_SIZE)
        try:
            image = _SNAPSHOT_DECODER.decode(data)
        except msgspec.DecodeError as exc:
            raise StorageError(f"bad KV snapshot image: {exc}") from exc
        keys, values = image.keys, image.values
        if len(keys) != len(values):
            raise StorageError(f"bad KV snapshot image: {len(keys)} keys, {len(values)} values")
        if any(a >= b for a, b in zip(keys, keys[1:])):
            raise StorageError("bad KV snapshot image: keys not strictly sorted")
        data_size_bytes = sum(map(_utf8_size, keys)) + sum(map(_utf8_size, values))
        if data_size_bytes > MAX_KV_DATA_SIZE:
            raise LimitExceeded("MAX_KV_DATA_SIZE", data_size_bytes, MAX_KV_DATA_SIZE)
        self._data = dict(zip(keys, values))
        self._keys = _SortedKeys(list(keys))
        self._data_size_bytes = data_size_bytes
        self._applied_index = image.applied_index
        self._results.clear()
        return image.membership


__all__ = [
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "MAX_COMMAND_SIZE",
    "MAX_SETMULTI_PAIRS",
    "MAX_SCAN_LIMIT",
    "MAX_SCAN_RESPONSE_SIZE",
    "MAX_KV_DATA_SIZE",
    "MAX_KV_KEYS",
    "MAX_CACHED_RESULTS",
    "Set",
    "SetMulti",
    "Delete",
    "CompareAndSwap",
    "Get",
    "Scan",
    "KvCommand",
    "KvWrite",
    "KvRead",
    "WriteResult",
    "CasResult",
    "GetResult",
    "ScanResult",
    "Rejected",
    "NoOp",
    "AlreadyApplied",
    "KvResult",
    "KvSnapshot",
    "validate_command",
    "encode_command",
    "decode_command",
    "encode_result",
    "decode_result",
    "decode_json_command",
    "encode_json_command",
    "scan_page",
    "KvStateMachine",
]
