"""Raft wire messages: tagged, frozen msgspec Structs, one union, one Encoder/Decoder.

Rules:

- Every message carries `from_id`, `to_id` and `term` first (the sender's current term; for a
  pre-vote request, the term the sender *would* campaign at).
- Bounds live in the types (`Meta(max_length=...)`), so the decoder rejects oversized input; the
  whole encoded message stays <= MAX_RPC_MESSAGE_SIZE (10 MiB, `aspen.wire`).
- Evolution: new fields get defaults and go at the end; tags are never reused (STYLE §14).
  Wire Structs do not forbid unknown fields, so old nodes skip fields they don't know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import msgspec

from aspen.errors import WireDecodeError
from aspen.raft.types import Entry, SnapshotMeta
from aspen.units import MiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

# Entries in one AppendEntries on the wire. The core's default batch is openraft's
# max_payload_entries = 300 (RaftConfig.max_entries_per_append); the wire allows headroom for
# tuned configs (guess: revisit).
MAX_ENTRIES_PER_APPEND = 4096

# Room kept in a snapshot chunk message for everything but the chunk bytes: the meta holds a
# Membership of up to MAX_MEMBERS (100) addresses of up to 4 KiB each (~400 KiB), so 1 MiB is
# ample. Chunk bytes + headroom stay <= MAX_RPC_MESSAGE_SIZE.
SNAPSHOT_CHUNK_HEADROOM_SIZE = 1 * MiB
MAX_SNAPSHOT_CHUNK_SIZE = MAX_RPC_MESSAGE_SIZE - SNAPSHOT_CHUNK_HEADROOM_SIZE

T = TypeVar("T")


class AppendEntries(msgspec.Struct, tag="app", frozen=True, array_like=True):
    """Leader -> follower: entries after (prev_index, prev_term), and the leader's commit (§5.3)."""

    from_id: int
    to_id: int
    term: int
    prev_index: int
    prev_term: int
    entries: Annotated[list[Entry], msgspec.Meta(max_length=MAX_ENTRIES_PER_APPEND)]
    leader_commit: int


class AppendEntriesResponse(msgspec.Struct, tag="app_resp", frozen=True, array_like=True):
    """Follower -> leader.

    Accepted: `index` is the follower's last index known to match the leader's log. Rejected:
    `index` is the rejected prev_index and (`hint_index`, `hint_term`) is the follower's guess of
    where the logs may match (etcd's fast backtracking, raft.go findConflictByTerm): the largest
    index <= min(prev_index, last_index) whose term is <= the leader's prev_term.
    """

    from_id: int
    to_id: int
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


class RequestVote(msgspec.Struct, tag="vote", frozen=True, array_like=True):
    """Candidate -> voter (§5.2). `pre_vote`: Raft thesis §9.6, nobody changes term or vote.

    `transfer` is set when the election follows a TimeoutNow (leader transfer, thesis §3.10): the
    voter then ignores its leader lease, which check-quorum would otherwise make it honour.
    """

    from_id: int
    to_id: int
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


class RequestVoteResponse(msgspec.Struct, tag="vote_resp", frozen=True, array_like=True):
    """Voter -> candidate. For a granted pre-vote, `term` echoes the requested term."""

    from_id: int
    to_id: int
    term: int
    granted: bool
    pre_vote: bool = False


class Heartbeat(msgspec.Struct, tag="hb", frozen=True, array_like=True):
    """Leader -> follower: keeps the lease, carries commit (capped at the follower's match) and the
    ReadIndex round `read_ctx` the follower must echo (thesis §6.4)."""

    from_id: int
    to_id: int
    term: int
    commit: int
    read_ctx: int = 0


class HeartbeatResponse(msgspec.Struct, tag="hb_resp", frozen=True, array_like=True):
    """Follower -> leader: echoes `read_ctx`.

    `lost_log`: the heartbeat's commit (capped at what the leader believes we hold) is beyond our
    last index, so we lost acknowledged entries (a wiped disk); `last_index` then tells the leader
    where to resume replicating.
    """

    from_id: int
    to_id: int
    term: int
    read_ctx: int = 0
    lost_log: bool = False
    last_index: int = 0


class InstallSnapshot(msgspec.Struct, tag="snap", frozen=True, array_like=True):
    """Leader -> follower: bytes [offset, offset+len(data)) of the snapshot described by `meta`."""

    from_id: int
    to_id: int
    term: int
    meta: SnapshotMeta
    offset: int
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_SNAPSHOT_CHUNK_SIZE)]
    done: bool


class InstallSnapshotResponse(msgspec.Struct, tag="snap_resp", frozen=True, array_like=True):
    """Follower -> leader: for snapshot `meta_index`, the follower holds bytes [0, next_offset).

    `done`: the snapshot is installed (or the follower already had it), so the leader can resume
    appending after `meta_index`. A leader resumes a broken transfer from `next_offset`.
    """

    from_id: int
    to_id: int
    term: int
    meta_index: int
    meta_term: int
    next_offset: int
    done: bool = False


class TimeoutNow(msgspec.Struct, tag="timeout_now", frozen=True, array_like=True):
    """Leader -> transfer target: campaign now, skipping pre-vote (thesis §3.10)."""

    from_id: int
    to_id: int
    term: int


class ReadIndexRequest(msgspec.Struct, tag="read", frozen=True, array_like=True):
    """Follower -> leader: a forwarded linearizable read (thesis §6.4); `request_id` is the
    follower's own id for the read, echoed back."""

    from_id: int
    to_id: int
    term: int
    request_id: int


class ReadIndexResponse(msgspec.Struct, tag="read_resp", frozen=True, array_like=True):
    """Leader -> follower: serve read `request_id` once applied >= `index`; `ok` False = retry."""

    from_id: int
    to_id: int
    term: int
    request_id: int
    index: int
    ok: bool


# Bounds of one ForwardedWrites / ForwardedReads / ForwardedResults message (a loop turn's or a
# pump's worth).
MAX_FORWARDED_WRITES = 4096
# The commands (queries, results) of one such message stay below this many bytes, beyond the
# first; more go in another message. One result is at most a scan's MAX_SCAN_RESPONSE_SIZE
# (4 MiB), so every message fits MAX_RPC_MESSAGE_SIZE.
FORWARDED_WRITES_TARGET_SIZE = 1024 * 1024


class ForwardedWrite(msgspec.Struct, frozen=True, array_like=True):
    request_id: int  # the follower's own id for the write, echoed back
    command: bytes  # encoded KvCommand (kv.encode_command), checked by the leader's proposal


class ForwardedWrites(msgspec.Struct, tag="fwd", frozen=True, array_like=True):
    """Follower -> leader: client writes the follower accepted (etcd's MsgProp). Not part of the
    consensus protocol: the follower's I/O process sends it (aspen.forwarding), the
    leader's worker proposes each and answers with ForwardedResults. It rides the raft-rpc
    stream with the appends, so forwarding costs no stream of its own."""

    from_id: int
    to_id: int
    term: int
    writes: Annotated[list[ForwardedWrite], msgspec.Meta(max_length=MAX_FORWARDED_WRITES)]


class ForwardedRead(msgspec.Struct, frozen=True, array_like=True):
    request_id: int  # the follower's own id for the read, echoed back
    query: bytes  # encoded kv.Get or kv.Scan (kv.encode_command)


class ForwardedReads(msgspec.Struct, tag="fwd_read", frozen=True, array_like=True):
    """Follower -> leader: linearizable reads a follower's I/O process accepted. The leader runs
    ReadIndex for them and answers each with a ForwardedResult (status 200: the encoded
    KvResult) once its state machine reached the read index; the follower's worker takes no
    part. Answered in ForwardedResults, like writes (request ids are the sender's, shared)."""

    from_id: int
    to_id: int
    term: int
    reads: Annotated[list[ForwardedRead], msgspec.Meta(max_length=MAX_FORWARDED_WRITES)]


# ForwardedResult.status: "not the leader, try `leader_id`" (nothing was proposed).
STATUS_NOT_LEADER = 421


class ForwardedResult(msgspec.Struct, frozen=True, array_like=True):
    request_id: int
    status: int  # 200 = applied (`result` is the encoded KvResult); else an HTTP-like error
    result: bytes = b""
    message: str = ""
    leader_id: int = 0  # STATUS_NOT_LEADER: this is who is, if known


class ForwardedResults(msgspec.Struct, tag="fwd_resp", frozen=True, array_like=True):
    """Leader -> follower: the outcome of forwarded writes (once applied) and reads (once the
    read index is applied), or their refusal."""

    from_id: int
    to_id: int
    term: int
    results: Annotated[list[ForwardedResult], msgspec.Meta(max_length=MAX_FORWARDED_WRITES)]


def chunk_by_size(items: list[T], size_of: Callable[[T], int], *, max_count: int = MAX_FORWARDED_WRITES,
                  target_size: int = FORWARDED_WRITES_TARGET_SIZE) -> list[list[T]]:
    """Split `items` into runs of at most `max_count` and, beyond one item, `target_size` bytes
    (by `size_of`): the bodies of bounded ForwardedWrites / ForwardedReads / ForwardedResults."""
    chunks: list[list[T]] = []
    start = 0
    while start < len(items):
        end, size = start, 0
        while end < len(items) and end - start < max_count and \
                (end == start or size + size_of(items[end]) <= target_size):
            size += size_of(items[end])
            end += 1
        chunks.append(items[start:end])
        start = end
    return chunks


RaftMessage = (
    AppendEntries
    | AppendEntriesResponse
    | RequestVote
    | RequestVoteResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)
# Everything on the raft-rpc wire: the consensus messages (for RaftCore) and the workers' own.
PeerMessage = RaftMessage | ForwardedWrites | ForwardedReads | ForwardedResults

_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[PeerMessage] = msgspec.msgpack.Decoder(PeerMessage)


def encode_message(message: PeerMessage) -> bytes:
    """The msgpack body of `message` (frame it with `aspen.wire.frame`)."""
    return _ENCODER.encode(message)


def decode_message(body: bytes) -> PeerMessage:
    """Decode one message body; raises WireDecodeError on garbage or a violated bound."""
    if len(body) > MAX_RPC_MESSAGE_SIZE:
        raise WireDecodeError(f"raft message of {len(body)} bytes > MAX_RPC_MESSAGE_SIZE")
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad raft message: {exc}") from exc


__all__ = [
    "MAX_ENTRIES_PER_APPEND",
    "MAX_FORWARDED_WRITES",
    "FORWARDED_WRITES_TARGET_SIZE",
    "STATUS_NOT_LEADER",
    "chunk_by_size",
    "ForwardedWrite",
    "ForwardedWrites",
    "ForwardedRead",
    "ForwardedReads",
    "ForwardedResult",
    "ForwardedResults",
    "PeerMessage",
    "MAX_SNAPSHOT_CHUNK_SIZE",
    "SNAPSHOT_CHUNK_HEADROOM_SIZE",
    "AppendEntries",
    "AppendEntriesResponse",
    "RequestVote",
    "RequestVoteResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "TimeoutNow",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "RaftMessage",
    "encode_message",
    "decode_message",
]
