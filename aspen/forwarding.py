"""LeaderForwarder: a follower's I/O process sends client writes and reads to the leader's worker.

A write that reaches a follower goes to the leader as `ForwardedWrites` (etcd's MsgProp) on the
raft-rpc stream, with the node's other Raft messages; the leader's worker proposes each and
answers with `ForwardedResults` once applied. A linearizable read goes as `ForwardedReads`: the
leader runs ReadIndex for it and answers with the result once its state machine reached the read
index. The follower's own worker takes no part: asking it cost two ring crossings and two worker
wake-ups per batch, and on a busy 2-core box each process hop is a scheduling delay
(perf/kv_bench.py, c=16).

Requests arriving in one event-loop turn go to one leader as one message of each kind (bounded by
MAX_FORWARDED_WRITES / FORWARDED_WRITES_TARGET_SIZE). While our worker owes that leader an
answer to an AppendEntries (it is persisting the entries), they wait, at most
MAX_FORWARD_HOLD_MS, and go with that AppendEntriesResponse, in the same frame and datagram: the
leader holds its next append to us until that response (aspen.raft.leader, hold_partial_appends),
so writes sent with it are proposed in time for that very append. At c=16 one message per write
was the forwarding's cost (a datagram each way per write, perf/kv_bench.py).

A write with no answer within its deadline (at most FORWARDED_WRITE_TIMEOUT_MS) is answered 504:
it may or may not have been applied (the leader died, or the connection dropped the message or
its answer), so it is not retried for the client; a read is answered NotLeader and retried.
Answers are matched by request id *and* by the node that was asked, so a stray or forged
ForwardedResults from another member resolves nothing.

The node routes inbound frames: `take_results` picks ForwardedResults out of what the raft-rpc
transport delivers (a prefix check, no decode of other messages) before the rest go to the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from aspen import worker_messages as wm
from aspen.errors import WireDecodeError
from aspen.raft.messages import (
    STATUS_NOT_LEADER,
    ForwardedRead,
    ForwardedReads,
    ForwardedResults,
    ForwardedWrite,
    ForwardedWrites,
    chunk_by_size,
    decode_message,
    encode_message,
)

logger = logging.getLogger(__name__)

# Below the I/O process's CLIENT_REQUEST_TIMEOUT_MS (10 s), so the client hears this rather
# than a bare timeout; far above a commit round trip.
FORWARDED_WRITE_TIMEOUT_MS = 8_000

# Longest a forwarded write waits for our worker's next AppendEntriesResponse to that leader
# (normally one fsync away: ~0.5 ms on this box, a few ms under load). guess: revisit.
MAX_FORWARD_HOLD_MS = 5

# Raft messages are array-like tagged Structs: a one-byte array header, then the tag.
_RESULTS_TAG = msgspec.msgpack.encode("fwd_resp")
_APPEND_TAG = msgspec.msgpack.encode("app")
_APPEND_RESPONSE_TAG = msgspec.msgpack.encode("app_resp")


@dataclass
class _Pending:
    leader_id: int
    deadline_s: float  # time.monotonic() after which it is answered 504
    future: asyncio.Future[wm.FromWorker]
    is_read: bool


@dataclass
class _Outbox:
    writes: list[ForwardedWrite] = field(default_factory=list)
    reads: list[ForwardedRead] = field(default_factory=list)
    since: float | None = None  # when its oldest request was first held


class _EarliestTimer:
    """One loop timer that calls `callback` by the earliest time it was asked for."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0  # time.monotonic() it fires at

    def arm(self, at_s: float) -> None:
        if self._handle is not None:
            if self._at <= at_s:
                return
            self._handle.cancel()
        self._at = at_s
        self._handle = asyncio.get_running_loop().call_later(max(0.0, at_s - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class LeaderForwarder:
    """Forwards client writes and reads to a leader over raft-rpc and matches the answers
    (module doc)."""

    def __init__(self, *, node_id: int, term: Callable[[], int],
                 send: Callable[[wm.RaftSendBatch], None]) -> None:
        self._node_id = node_id
        self._term = term
        self._send = send
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._outbox: dict[int, _Outbox] = {}
        self._append_owed: dict[int, float] = {}  # leader -> when it sent the append we owe an answer
        self._hold_timer = _EarliestTimer(self._flush)  # held requests that are due
        self._flush_scheduled = False
        self._expiry = _EarliestTimer(self._expire)  # requests past their deadline

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    async def forward(self, leader_id: int, command: bytes,
                      timeout_ms: int = FORWARDED_WRITE_TIMEOUT_MS) -> wm.FromWorker:
        """Send write `command` to `leader_id`'s worker; its answer as the local worker would
        give it: WriteDone, NotLeader (nothing was proposed: retry) or ErrorReply (504 after
        min(timeout_ms, FORWARDED_WRITE_TIMEOUT_MS) without an answer: outcome unknown)."""
        rid = self._next_id
        self._next_id += 1
        self._outbox.setdefault(leader_id, _Outbox()).writes.append(ForwardedWrite(rid, command))
        return await self._wait(rid, leader_id, timeout_ms, is_read=False)

    async def forward_read(self, leader_id: int, query: bytes,
                           timeout_ms: int = FORWARDED_WRITE_TIMEOUT_MS) -> wm.FromWorker:
        """Send linearizable read `query` (an encoded Get or Scan) to `leader_id`'s worker:
        ReadDone, NotLeader (retry) or ErrorReply."""
        rid = self._next_id
        self._next_id += 1
        self._outbox.setdefault(leader_id, _Outbox()).reads.append(ForwardedRead(rid, query))
        return await self._wait(rid, leader_id, timeout_ms, is_read=True)

    async def _wait(self, rid: int, leader_id: int, timeout_ms: int, *, is_read: bool) -> wm.FromWorker:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[wm.FromWorker] = loop.create_future()
        deadline_s = time.monotonic() + min(timeout_ms, FORWARDED_WRITE_TIMEOUT_MS) / 1000
        self._pending[rid] = _Pending(leader_id, deadline_s, future, is_read)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        self._expiry.arm(deadline_s)
        try:
            return await future
        finally:
            self._pending.pop(rid, None)

    def _flush(self) -> None:
        """End of the loop turn: send what waits, except to a leader whose append our worker is
        still answering (those go with the answer, or after MAX_FORWARD_HOLD_MS)."""
        self._flush_scheduled = False
        now = time.monotonic()
        hold_s = MAX_FORWARD_HOLD_MS / 1000
        due: list[int] = []
        next_due: float | None = None
        for leader_id, box in self._outbox.items():
            since = box.since = now if box.since is None else box.since
            owed = self._append_owed.get(leader_id)
            if owed is None or now - owed >= hold_s or now - since >= hold_s:
                due.append(leader_id)
            else:
                until = min(owed, since) + hold_s
                next_due = until if next_due is None else min(next_due, until)
        self._send_to(due)
        if next_due is not None:
            self._hold_timer.arm(next_due)

    def _send_to(self, leaders: list[int]) -> None:
        if not leaders:
            return
        term = self._term()
        sends: list[wm.RaftSend] = []
        me = self._node_id
        for leader_id in leaders:
            box = self._outbox.pop(leader_id, None)
            if box is None:
                continue
            payloads = [encode_message(ForwardedWrites(me, leader_id, term, chunk))
                        for chunk in chunk_by_size(box.writes, _command_size)]
            payloads += [encode_message(ForwardedReads(me, leader_id, term, chunk))
                         for chunk in chunk_by_size(box.reads, _query_size)]
            sends += [wm.RaftSend(leader_id, p, len(p) >= wm.LARGE_MESSAGE_SIZE) for p in payloads]
        for batch in wm.send_batches(sends):
            self._send(batch)

    def before_worker_sends(self, batch: wm.RaftSendBatch) -> None:
        """Our worker's outbound messages are about to go: held writes to a leader ride with our
        AppendEntriesResponse to it (sent first, so the leader proposes them before it sends us
        its next append)."""
        answered: list[int] = []
        for message in batch.messages:
            if message.payload.startswith(_APPEND_RESPONSE_TAG, 1):
                if self._append_owed.pop(message.to_node, None) is not None and message.to_node in self._outbox:
                    answered.append(message.to_node)
        self._send_to(answered)

    def _expire(self) -> None:
        """Answer every request past its deadline, a write 504 (its outcome is unknown), a read
        NotLeader (retried once a leader is known); re-arm for the earliest remaining one."""
        now = time.monotonic()
        earliest: float | None = None
        for rid, pending in list(self._pending.items()):
            if now < pending.deadline_s:
                earliest = pending.deadline_s if earliest is None else min(earliest, pending.deadline_s)
                continue
            del self._pending[rid]
            if not pending.future.done():
                pending.future.set_result(wm.NotLeader(rid, 0) if pending.is_read else wm.ErrorReply(
                    rid, f"no answer from leader {pending.leader_id} in time; the write may or may not "
                         "have been applied", 504))
        if earliest is not None:
            self._expiry.arm(earliest)

    def take_results(self, messages: list[wm.ToWorker]) -> list[wm.ToWorker]:
        """Answer our forwarded writes from `messages` (what raft-rpc delivers); the rest, in
        order, for the worker. Notes the appends the worker will answer (see `_flush`)."""
        rest: list[wm.ToWorker] | None = None
        for i, message in enumerate(messages):
            if isinstance(message, wm.RaftReceive):
                payload = message.payload
                if payload.startswith(_RESULTS_TAG, 1):
                    if rest is None:
                        rest = list(messages[:i])
                    self._answer(message.from_node, payload)
                    continue
                if payload.startswith(_APPEND_TAG, 1):
                    self._append_owed.setdefault(message.from_node, time.monotonic())
            if rest is not None:
                rest.append(message)
        return messages if rest is None else rest

    def _answer(self, from_node: int, payload: bytes) -> None:
        try:
            msg = decode_message(payload)
        except WireDecodeError as exc:
            logger.warning("dropping undecodable forwarded-write answer from node %d: %s", from_node, exc)
            return
        if not isinstance(msg, ForwardedResults) or msg.from_id != from_node or msg.to_id != self._node_id:
            logger.warning("dropping a forwarded-write answer from node %d not meant for us", from_node)
            return
        for result in msg.results:
            pending = self._pending.get(result.request_id)
            if pending is None or pending.leader_id != from_node or pending.future.done():
                continue  # already answered (timed out), or not sent there
            rid = result.request_id
            reply: wm.FromWorker
            if result.status == 200:
                reply = wm.ReadDone(rid, result.result) if pending.is_read else wm.WriteDone(rid, result.result)
            elif result.status == STATUS_NOT_LEADER:
                leader = result.leader_id if result.leader_id != self._node_id else 0
                reply = wm.NotLeader(rid, leader)  # nothing was proposed: the caller retries
            else:
                reply = wm.ErrorReply(rid, result.message, result.status)
            pending.future.set_result(reply)

    def close(self) -> None:
        """Fail every request still waiting (the node is stopping)."""
        self._expiry.cancel()
        self._hold_timer.cancel()
        self._outbox.clear()
        for rid, pending in self._pending.items():
            if not pending.future.done():
                pending.future.set_result(
                    wm.ErrorReply(rid, "node stopping", 503) if pending.is_read else
                    wm.ErrorReply(rid, "node stopping; the write may or may not have been applied", 504))
        self._pending.clear()


def _command_size(write: ForwardedWrite) -> int:
    return len(write.command)


def _query_size(read: ForwardedRead) -> int:
    return len(read.query)


__all__ = ["LeaderForwarder", "FORWARDED_WRITE_TIMEOUT_MS", "MAX_FORWARD_HOLD_MS"]
