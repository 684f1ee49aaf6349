"""Messages between the I/O process and the Raft worker process (over the shared-memory rings).

Tagged msgspec Structs, MessagePack-encoded, one union per direction and one reused
Encoder/Decoder each. Every request carries a `request_id` the reply echoes, so the I/O process
can have many requests outstanding. New fields go at the end with defaults; tags are never reused.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from aspen.errors import WireDecodeError
from aspen.wire import MAX_RPC_MESSAGE_SIZE

# A worker message carries at most one RPC-sized payload plus a small envelope.
MAX_WORKER_MESSAGE_SIZE = MAX_RPC_MESSAGE_SIZE + 64 * 1024
MAX_ECHO_PAYLOAD_SIZE = MAX_RPC_MESSAGE_SIZE


class Ping(msgspec.Struct, tag="ping", frozen=True):
    request_id: int


class Echo(msgspec.Struct, tag="echo", frozen=True):
    request_id: int
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_ECHO_PAYLOAD_SIZE)]


class StatusRequest(msgspec.Struct, tag="status", frozen=True):
    request_id: int


class Shutdown(msgspec.Struct, tag="shutdown", frozen=True):
    """Finish what is in hand, sync, and exit 0."""


class Ready(msgspec.Struct, tag="ready", frozen=True):
    """First message from a new worker: it has attached both rings and is serving."""

    pid: int
    incarnation: int


class Pong(msgspec.Struct, tag="pong", frozen=True):
    request_id: int


class EchoReply(msgspec.Struct, tag="echo_reply", frozen=True):
    request_id: int
    payload: bytes


class StatusReply(msgspec.Struct, tag="status_reply", frozen=True):
    request_id: int
    pid: int
    incarnation: int
    started_unix_ms: int
    messages_handled: int


class ErrorReply(msgspec.Struct, tag="error_reply", frozen=True):
    """A request failed; `status` is the HTTP status the control plane answers with
    (400 invalid, 404 not found, 412 not initialized, 502 failed, 503 unavailable)."""

    request_id: int
    message: str
    status: int = 502


# --- Raft traffic and client requests (I/O process -> worker) ---------------------------------

MAX_RAFT_BATCH_MESSAGES = 4096  # = MAX_RING_BATCH_MESSAGES: one ring batch of outbound messages


class RaftReceive(msgspec.Struct, tag="raft_in", frozen=True):
    """A Raft message from peer `from_node` (its sender already authenticated by the I/O process)."""

    from_node: int
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_RPC_MESSAGE_SIZE)]


class ClientWrite(msgspec.Struct, tag="write", frozen=True):
    """An encoded KV write command (aspen.raft.kv) to propose."""

    request_id: int
    command: Annotated[bytes, msgspec.Meta(max_length=MAX_RPC_MESSAGE_SIZE)]


class ClientRead(msgspec.Struct, tag="read", frozen=True):
    """An encoded KV read (Get/Scan); linearizable through ReadIndex unless `linearizable` is False."""

    request_id: int
    query: Annotated[bytes, msgspec.Meta(max_length=MAX_RPC_MESSAGE_SIZE)]
    linearizable: bool = True


class InitCluster(msgspec.Struct, tag="init", frozen=True):
    """Bootstrap a new cluster with these voters (node id -> address text); only on a fresh node."""

    request_id: int
    members: dict[int, str]


class AddLearner(msgspec.Struct, tag="add_learner", frozen=True):
    request_id: int
    node_id: int
    addr: str


class ChangeMembership(msgspec.Struct, tag="change_membership", frozen=True):
    """Make `voters` the voter set, one voter change at a time; removed voters leave."""

    request_id: int
    voters: list[int]


class TriggerSnapshot(msgspec.Struct, tag="trigger_snapshot", frozen=True):
    request_id: int


class RaftStatusRequest(msgspec.Struct, tag="raft_status", frozen=True):
    request_id: int


# --- worker -> I/O process ----------------------------------------------------------------------


# A message at least this large goes on the bulk stream (snapshot chunks always do).
LARGE_MESSAGE_SIZE = 64 * 1024


class RaftSend(msgspec.Struct, tag="raft_out", frozen=True, array_like=True):
    """A Raft message for peer `to_node`; `large` ones (snapshot chunks, big appends) go on a
    separate stream so heartbeats never wait behind them."""

    to_node: int
    payload: bytes
    large: bool = False


class RaftSendBatch(msgspec.Struct, tag="raft_out_batch", frozen=True):
    messages: Annotated[list[RaftSend], msgspec.Meta(max_length=MAX_RAFT_BATCH_MESSAGES)]


def send_batches(sends: list[RaftSend]) -> list[RaftSendBatch]:
    """`sends` in order, as batches of at most MAX_RAFT_BATCH_MESSAGES."""
    return [RaftSendBatch(sends[start:start + MAX_RAFT_BATCH_MESSAGES])
            for start in range(0, len(sends), MAX_RAFT_BATCH_MESSAGES)]


class WriteDone(msgspec.Struct, tag="write_done", frozen=True):
    request_id: int
    result: bytes  # an encoded KvResult


class ReadDone(msgspec.Struct, tag="read_done", frozen=True):
    request_id: int
    result: bytes  # an encoded GetResult / ScanResult


class NotLeader(msgspec.Struct, tag="not_leader", frozen=True):
    """This node cannot serve the request; `leader_id` (0 = unknown) can."""

    request_id: int
    leader_id: int


class ClusterState(msgspec.Struct, tag="cluster_state", frozen=True):
    """The membership after a change (or now): voters, learners, and each member's address text."""

    request_id: int
    voters: list[int]
    learners: list[int]
    addrs: dict[int, str]


class SnapshotDone(msgspec.Struct, tag="snapshot_done", frozen=True):
    """The snapshot now on disk (index 0 = none yet)."""

    request_id: int
    index: int
    term: int


class RaftStatus(msgspec.Struct, tag="raft_status_reply", frozen=True):
    request_id: int
    node_id: int
    role: str
    leader_id: int
    term: int
    commit_index: int
    last_log_index: int
    applied_index: int
    applied_term: int
    snapshot_index: int
    snapshot_term: int
    voters: list[int]
    learners: list[int]
    replication: dict[int, int]  # leader only: node -> matched index
    fsyncs: int = 0
    fsync_seconds_total: float = 0.0
    fsync_seconds_max: float = 0.0


class StateUpdate(msgspec.Struct, tag="state_update", frozen=True):
    """Unsolicited, whenever leader, term or membership change: the I/O process routes client
    requests to `leader_id` and trusts `addrs` for the members (authoritative peer map)."""

    leader_id: int
    term: int
    role: str
    voters: list[int]
    learners: list[int]
    addrs: dict[int, str]


ToWorker = (Ping | Echo | StatusRequest | Shutdown | RaftReceive | ClientWrite | ClientRead | InitCluster
            | AddLearner | ChangeMembership | TriggerSnapshot | RaftStatusRequest)
FromWorker = (Ready | Pong | EchoReply | StatusReply | ErrorReply | RaftSendBatch | WriteDone | ReadDone | NotLeader
              | ClusterState | SnapshotDone | RaftStatus | StateUpdate)

_encoder = msgspec.msgpack.Encoder()
_to_worker_decoder: msgspec.msgpack.Decoder[ToWorker] = msgspec.msgpack.Decoder(ToWorker)
_from_worker_decoder: msgspec.msgpack.Decoder[FromWorker] = msgspec.msgpack.Decoder(FromWorker)


def encode(message: ToWorker | FromWorker) -> bytes:
    return _encoder.encode(message)


def decode_to_worker(data: bytes | memoryview) -> ToWorker:
    try:
        return _to_worker_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad message to worker: {exc}") from None


def decode_from_worker(data: bytes | memoryview) -> FromWorker:
    try:
        return _from_worker_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad message from worker: {exc}") from None


__all__ = [
    "RaftReceive", "ClientWrite", "ClientRead", "InitCluster", "AddLearner", "ChangeMembership",
    "TriggerSnapshot", "RaftStatusRequest", "RaftSend", "RaftSendBatch", "WriteDone", "ReadDone",
    "NotLeader", "ClusterState", "SnapshotDone", "RaftStatus", "StateUpdate",
    "Ping", "Echo", "StatusRequest", "Shutdown", "Ready", "Pong", "EchoReply",
    "StatusReply", "ErrorReply", "ToWorker", "FromWorker", "encode", "decode_to_worker",
    "decode_from_worker", "MAX_WORKER_MESSAGE_SIZE",
]
