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


class Crash(msgspec.Struct, tag="crash", frozen=True):
    """Exit at once with `exit_code` without cleanup: lets tests and operators exercise the
    supervisor's restart path on purpose (`POST /admin/worker/crash`)."""

    exit_code: int = 70


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
    request_id: int
    message: str


ToWorker = Ping | Echo | StatusRequest | Shutdown | Crash
FromWorker = Ready | Pong | EchoReply | StatusReply | ErrorReply

_encoder = msgspec.msgpack.Encoder()
_to_worker_decoder = msgspec.msgpack.Decoder(ToWorker)
_from_worker_decoder = msgspec.msgpack.Decoder(FromWorker)


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
    "Ping", "Echo", "StatusRequest", "Shutdown", "Crash", "Ready", "Pong", "EchoReply",
    "StatusReply", "ErrorReply", "ToWorker", "FromWorker", "encode", "decode_to_worker",
    "decode_from_worker", "MAX_WORKER_MESSAGE_SIZE",
]
