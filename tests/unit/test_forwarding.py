"""LeaderForwarder: a follower's I/O process forwarding writes and reads to the leader over raft-rpc."""

from __future__ import annotations

import asyncio

from aspen import worker_messages as wm
from aspen.raft import kv
from aspen.raft.messages import (
    MAX_FORWARDED_WRITES,
    STATUS_NOT_LEADER,
    AppendEntries,
    AppendEntriesResponse,
    ForwardedReads,
    ForwardedResult,
    ForwardedResults,
    ForwardedWrite,
    ForwardedWrites,
    chunk_by_size,
    decode_message,
    encode_message,
)
from aspen.forwarding import MAX_FORWARD_HOLD_MS, LeaderForwarder

ME, LEADER, OTHER = 2, 1, 3


class Harness:
    def __init__(self) -> None:
        self.sent: list[wm.RaftSendBatch] = []
        self.term = 7
        self.fwd = LeaderForwarder(node_id=ME, term=lambda: self.term, send=self.sent.append)

    def forwarded(self) -> list[tuple[int, ForwardedWrites]]:
        return [(to, msg) for to, msg in self.messages() if isinstance(msg, ForwardedWrites)]

    def messages(self) -> list[tuple[int, ForwardedWrites | ForwardedReads]]:
        out = []
        for batch in self.sent:
            for m in batch.messages:
                msg = decode_message(m.payload)
                assert isinstance(msg, (ForwardedWrites, ForwardedReads))
                out.append((m.to_node, msg))
        return out

    def answer(self, from_node: int, results: list[ForwardedResult], to: int = ME) -> list[wm.ToWorker]:
        payload = encode_message(ForwardedResults(from_node, to, self.term, results))
        return self.fwd.take_results([wm.RaftReceive(from_node, payload)])


def command(key: str) -> bytes:
    return kv.encode_command(kv.Set(key, "v"))


def test_writes_of_one_loop_turn_go_as_one_message_and_each_gets_its_own_answer() -> None:
    asyncio.run(_writes_of_one_loop_turn_go_as_one_message_and_each_gets_its_own_answer())


async def _writes_of_one_loop_turn_go_as_one_message_and_each_gets_its_own_answer() -> None:
    h = Harness()
    tasks = [asyncio.create_task(h.fwd.forward(LEADER, command(k))) for k in ("a", "b", "c")]
    await asyncio.sleep(0)  # the turn the requests arrived in
    await asyncio.sleep(0)  # the flush scheduled by the first
    sent = h.forwarded()
    assert len(sent) == 1
    to, msg = sent[0]
    assert (to, msg.from_id, msg.to_id, msg.term) == (LEADER, ME, LEADER, 7)
    assert [kv.decode_command(w.command) for w in msg.writes] == [kv.Set("a", "v"), kv.Set("b", "v"), kv.Set("c", "v")]
    ids = [w.request_id for w in msg.writes]
    rest = h.answer(LEADER, [
        ForwardedResult(ids[2], 503, message="busy"),
        ForwardedResult(ids[0], 200, kv.encode_result(kv.WriteResult())),
        ForwardedResult(ids[1], STATUS_NOT_LEADER, leader_id=OTHER),
    ])
    assert rest == []  # nothing of it is for the worker
    a, b, c = await asyncio.gather(*tasks)
    assert isinstance(a, wm.WriteDone) and kv.decode_result(a.result) == kv.WriteResult()
    assert isinstance(b, wm.NotLeader) and b.leader_id == OTHER  # nothing proposed: the caller retries
    assert isinstance(c, wm.ErrorReply) and (c.status, c.message) == (503, "busy")
    assert h.fwd.pending_count == 0


def test_only_the_asked_leader_can_answer_and_other_raft_messages_pass_to_the_worker_in_order() -> None:
    asyncio.run(_only_the_asked_leader_can_answer_and_other_raft_messages_pass_to_the_worker_in_order())


async def _only_the_asked_leader_can_answer_and_other_raft_messages_pass_to_the_worker_in_order() -> None:
    h = Harness()
    task = asyncio.create_task(h.fwd.forward(LEADER, command("a")))
    for _ in range(2):
        await asyncio.sleep(0)
    (_, msg), = h.forwarded()
    rid = msg.writes[0].request_id
    ok = ForwardedResult(rid, 200, kv.encode_result(kv.WriteResult()))
    assert h.answer(OTHER, [ok]) == []  # another member answering for it: ignored
    assert h.answer(LEADER, [ok], to=OTHER) == []  # addressed to another node: ignored
    assert not task.done()
    append_resp = wm.RaftReceive(OTHER, encode_message(AppendEntriesResponse(OTHER, ME, 7, 5)))
    garbage = wm.RaftReceive(LEADER, b"\x95\xa8fwd_resp\xff")  # looks like one, does not decode
    answer = wm.RaftReceive(LEADER, encode_message(ForwardedResults(LEADER, ME, 7, [ok])))
    rest = h.fwd.take_results([append_resp, garbage, answer, append_resp])
    assert rest == [append_resp, append_resp]
    assert isinstance(await task, wm.WriteDone)


def test_an_unanswered_write_gets_504_by_its_deadline_and_a_late_answer_changes_nothing() -> None:
    asyncio.run(_an_unanswered_write_gets_504_by_its_deadline_and_a_late_answer_changes_nothing())


async def _an_unanswered_write_gets_504_by_its_deadline_and_a_late_answer_changes_nothing() -> None:
    h = Harness()
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = asyncio.create_task(h.fwd.forward(LEADER, command("slow"), timeout_ms=5_000))
    fast = asyncio.create_task(h.fwd.forward(LEADER, command("fast"), timeout_ms=50))  # re-arms earlier
    reply = await asyncio.wait_for(fast, 2)
    assert isinstance(reply, wm.ErrorReply) and reply.status == 504, reply
    assert 0.04 <= loop.time() - started < 1.0
    assert not slow.done()
    (_, msg), = h.forwarded()
    late = ForwardedResult(msg.writes[1].request_id, 200, kv.encode_result(kv.WriteResult()))
    assert h.answer(LEADER, [late]) == []
    h.fwd.close()  # stopping: what still waits gets 504 (its outcome is unknown), not a retry
    stopped = await slow
    assert isinstance(stopped, wm.ErrorReply) and stopped.status == 504
    assert h.fwd.pending_count == 0


def test_large_batches_are_split_by_count_and_bytes() -> None:
    def size(w: ForwardedWrite) -> int:
        return len(w.command)

    small = [ForwardedWrite(i, b"x") for i in range(MAX_FORWARDED_WRITES + 1)]
    assert [len(c) for c in chunk_by_size(small, size)] == [MAX_FORWARDED_WRITES, 1]
    big = [ForwardedWrite(i, b"x" * (600 * 1024)) for i in range(3)]
    assert [len(c) for c in chunk_by_size(big, size)] == [1, 1, 1]  # 1 MiB target: one 600 KiB each
    assert chunk_by_size([], size) == []


def test_reads_go_with_writes_in_their_own_message_and_come_back_as_read_results() -> None:
    asyncio.run(_reads_and_writes())


async def _reads_and_writes() -> None:
    h = Harness()
    get = kv.encode_command(kv.Get("k"))
    read = asyncio.create_task(h.fwd.forward_read(LEADER, get))
    write = asyncio.create_task(h.fwd.forward(LEADER, command("k")))
    for _ in range(2):
        await asyncio.sleep(0)
    sent = h.messages()
    assert [type(m) for _, m in sent] == [ForwardedWrites, ForwardedReads]  # one frame, one turn
    reads = sent[1][1]
    assert isinstance(reads, ForwardedReads) and [r.query for r in reads.reads] == [get]
    read_id, write_id = reads.reads[0].request_id, sent[0][1].writes[0].request_id  # type: ignore[union-attr]
    value = kv.encode_result(kv.GetResult("v"))
    h.answer(LEADER, [ForwardedResult(read_id, 200, value),
                      ForwardedResult(write_id, 200, kv.encode_result(kv.WriteResult()))])
    assert await read == wm.ReadDone(read_id, value)
    assert isinstance(await write, wm.WriteDone)
    # A read nobody answers is handed back as NotLeader (reads are safe to retry), not 504.
    lost = await asyncio.wait_for(h.fwd.forward_read(LEADER, get, timeout_ms=30), 2)
    assert isinstance(lost, wm.NotLeader) and lost.leader_id == 0


def test_writes_wait_for_our_append_response_to_the_leader_and_go_in_front_of_it() -> None:
    asyncio.run(_writes_wait_for_our_append_response())


async def _writes_wait_for_our_append_response() -> None:
    h = Harness()
    append = wm.RaftReceive(LEADER, encode_message(AppendEntries(LEADER, ME, 7, 4, 7, [], 4)))
    assert h.fwd.take_results([append]) == [append]  # for the worker, which now owes an answer
    task = asyncio.create_task(h.fwd.forward(LEADER, command("a")))
    for _ in range(3):
        await asyncio.sleep(0)
    assert h.sent == []  # held: our answer to the leader's append is being persisted
    response = wm.RaftSendBatch([wm.RaftSend(LEADER, encode_message(AppendEntriesResponse(ME, LEADER, 7, 4)))])
    h.fwd.before_worker_sends(response)
    (to, msg), = h.forwarded()  # sent now, ahead of the response (same loop turn, same frame)
    assert to == LEADER and [kv.decode_command(w.command) for w in msg.writes] == [kv.Set("a", "v")]
    h.answer(LEADER, [ForwardedResult(msg.writes[0].request_id, 200, kv.encode_result(kv.WriteResult()))])
    assert isinstance(await task, wm.WriteDone)
    # No append owed any more: the next write goes at the end of its loop turn.
    task = asyncio.create_task(h.fwd.forward(LEADER, command("b")))
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(h.forwarded()) == 2
    task.cancel()


def test_a_held_write_goes_after_max_forward_hold_ms_if_no_response_comes() -> None:
    asyncio.run(_a_held_write_goes_anyway())


async def _a_held_write_goes_anyway() -> None:
    h = Harness()
    append = wm.RaftReceive(LEADER, encode_message(AppendEntries(LEADER, ME, 7, 4, 7, [], 4)))
    h.fwd.take_results([append])
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(h.fwd.forward(LEADER, command("a")))
    for _ in range(200):  # bounded: 200 x 1 ms
        if h.sent:
            break
        await asyncio.sleep(0.001)
    waited_ms = (loop.time() - started) * 1000
    assert len(h.forwarded()) == 1
    assert MAX_FORWARD_HOLD_MS * 0.8 <= waited_ms < MAX_FORWARD_HOLD_MS + 100, waited_ms
    task.cancel()
