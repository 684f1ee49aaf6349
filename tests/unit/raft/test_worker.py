"""RaftWorker (core + storage + KV behind the worker protocol), driven by hand: no processes."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from aspen import worker_messages as wm
from aspen.raft import kv
from aspen.raft.config import RaftConfig
from aspen.raft.memory_storage import MemoryStorage
from aspen.raft.messages import (
    STATUS_NOT_LEADER,
    ForwardedRead,
    ForwardedReads,
    ForwardedResult,
    ForwardedResults,
    ForwardedWrite,
    ForwardedWrites,
    decode_message,
    encode_message,
)
from aspen.raft.worker import MAX_WRITE_HOLD_MS, RaftWorker

STEP_MS = 10
MAX_STEPS = 3000  # 30 s of virtual time: every wait below is bounded by it


class Cluster:
    def __init__(self, ids: list[int], seed: int = 1,
                 storage_factory: type[MemoryStorage] = MemoryStorage) -> None:
        self.now_ms = 0
        self.storages = {i: storage_factory() for i in ids}
        self.workers = {i: self._make(i) for i in ids}
        self.replies: dict[int, list[wm.FromWorker]] = {i: [] for i in ids}
        self.down: set[int] = set()
        self._rid = 0
        self.seed = seed

    def _make(self, node_id: int) -> RaftWorker:
        cfg = RaftConfig(node_id=node_id, heartbeat_interval_ms=50, election_timeout_min_ms=300,
                         election_timeout_max_ms=600, snapshot_interval_entries=0)
        return RaftWorker(cfg, self.storages[node_id], rng=random.Random(node_id * 7919))

    def add(self, node_id: int) -> None:
        self.storages[node_id] = MemoryStorage()
        self.workers[node_id] = self._make(node_id)
        self.replies[node_id] = []

    def restart(self, node_id: int) -> None:
        self.storages[node_id].crash()
        self.workers[node_id] = self._make(node_id)

    def send(self, node_id: int, make: object) -> int:
        self._rid += 1
        msg = make(self._rid)  # type: ignore[operator]
        self.replies[node_id].extend(self.workers[node_id].handle(msg, self.now_ms))
        return self._rid

    def step(self) -> None:
        self.now_ms += STEP_MS
        inflight: list[tuple[int, wm.RaftReceive]] = []
        for node_id, worker in self.workers.items():
            if node_id in self.down:
                continue
            if worker.next_deadline_ms() <= self.now_ms:
                worker.tick(self.now_ms)
            for out in worker.pump(self.now_ms):
                if isinstance(out, wm.RaftSendBatch):
                    for m in out.messages:
                        inflight.append((m.to_node, wm.RaftReceive(node_id, m.payload)))
                else:
                    self.replies[node_id].append(out)
        for to_node, msg in inflight:
            if to_node in self.workers and to_node not in self.down:
                self.workers[to_node].handle(msg, self.now_ms)

    def reply(self, node_id: int, rid: int) -> wm.FromWorker:
        for _ in range(MAX_STEPS):
            for r in self.replies[node_id]:
                if getattr(r, "request_id", None) == rid:
                    self.replies[node_id].remove(r)
                    return r
            self.step()
        raise AssertionError(f"no reply to request {rid} on node {node_id}")

    def leader(self) -> int:
        for _ in range(MAX_STEPS):
            leaders = [i for i, w in self.workers.items() if w.core.is_leader and i not in self.down]
            if len(leaders) == 1:
                return leaders[0]
            self.step()
        raise AssertionError("no leader")

    def settle(self) -> int:
        """Step until every live node knows the same leader and has applied what it committed."""
        leader = self.leader()
        for _ in range(MAX_STEPS):
            live = [w for i, w in self.workers.items() if i not in self.down]
            if all(w.core.leader_id == leader for w in live) and \
                    len({w.core.applied_index for w in live}) == 1:
                return leader
            self.step()
        raise AssertionError("cluster did not settle")

    def write(self, node_id: int, command: kv.KvCommand) -> wm.FromWorker:
        return self.reply(node_id, self.send(node_id, lambda r: wm.ClientWrite(r, kv.encode_command(command))))

    def read(self, node_id: int, key: str, linearizable: bool = True) -> wm.FromWorker:
        """A read on `node_id`, retried while no leader can confirm it (as the I/O process does)."""
        for _ in range(50):
            reply = self.reply(node_id, self.send(node_id, lambda r: wm.ClientRead(
                r, kv.encode_command(kv.Get(key)), linearizable)))
            if not isinstance(reply, wm.NotLeader):
                return reply
            for _ in range(10):
                self.step()
        return reply


def addrs(ids: list[int]) -> dict[int, str]:
    return {i: f"node-{i}" for i in ids}


def formed(ids: list[int]) -> Cluster:
    c = Cluster(ids)
    state = c.reply(ids[0], c.send(ids[0], lambda r: wm.InitCluster(r, addrs(ids))))
    assert isinstance(state, wm.ClusterState) and state.voters == ids
    c.settle()
    return c


def value_of(reply: wm.FromWorker) -> str | None:
    assert isinstance(reply, wm.ReadDone), reply
    result = kv.decode_result(reply.result)
    assert isinstance(result, kv.GetResult)
    return result.value


def test_uninitialized_node_says_412() -> None:
    c = Cluster([1])
    reply = c.write(1, kv.Set("a", "b"))
    assert isinstance(reply, wm.ErrorReply) and reply.status == 412


def test_init_elects_a_leader_and_writes_replicate() -> None:
    c = formed([1, 2, 3])
    leader = c.leader()
    assert isinstance(c.write(leader, kv.Set("k", "v")), wm.WriteDone)
    for node in (1, 2, 3):
        assert value_of(c.read(node, "k")) == "v"  # followers serve linearizable reads via ReadIndex


def test_second_init_is_refused() -> None:
    c = formed([1, 2, 3])
    for node in (1, 2):
        reply = c.reply(node, c.send(node, lambda r: wm.InitCluster(r, addrs([1, 2, 3]))))
        assert isinstance(reply, wm.ErrorReply) and reply.status == 400


def test_a_write_on_a_node_that_knows_no_leader_says_not_leader() -> None:
    c = formed([1, 2, 3])
    leader = c.settle()
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.down = {n for n in (1, 2, 3) if n != follower}  # cut off: its election timer fires
    for _ in range(MAX_STEPS):
        if c.workers[follower].core.leader_id == 0:
            break
        c.step()
    reply = c.write(follower, kv.Set("k", "v"))
    assert reply == wm.NotLeader(reply.request_id, 0)  # type: ignore[union-attr]


def test_cas_and_delete_results_come_back() -> None:
    c = formed([1])
    assert isinstance(c.write(1, kv.Set("k", "v1")), wm.WriteDone)
    done = c.write(1, kv.CompareAndSwap("k", "v0", "v2"))
    assert isinstance(done, wm.WriteDone)
    assert kv.decode_result(done.result) == kv.CasResult(False, "v1")
    done = c.write(1, kv.CompareAndSwap("k", "v1", None))
    assert kv.decode_result(done.result) == kv.CasResult(True, None)  # type: ignore[union-attr]
    assert value_of(c.read(1, "k")) is None


def test_learner_added_then_promoted_then_cluster_shrunk() -> None:
    c = formed([1, 2, 3])
    leader = c.leader()
    c.write(leader, kv.Set("before", "1"))
    for new in (4, 5):
        c.add(new)
        state = c.reply(leader, c.send(leader, lambda r, n=new: wm.AddLearner(r, n, f"node-{n}")))
        assert isinstance(state, wm.ClusterState) and new in state.learners
    state = c.reply(leader, c.send(leader, lambda r: wm.ChangeMembership(r, [1, 2, 3, 4, 5])))
    assert isinstance(state, wm.ClusterState) and state.voters == [1, 2, 3, 4, 5] and state.learners == []
    assert value_of(c.read(5, "before")) == "1"
    # Shrink to one voter; when the leader must go, it hands over and says who leads now.
    target = 3
    node = c.leader()
    for _ in range(20):  # follow leader hints as the I/O process does, stepping time between tries
        reply = c.reply(node, c.send(node, lambda r: wm.ChangeMembership(r, [target])))
        if isinstance(reply, wm.ClusterState):
            break
        assert isinstance(reply, (wm.NotLeader, wm.ErrorReply)), reply
        for _ in range(10):
            c.step()
        node = reply.leader_id if isinstance(reply, wm.NotLeader) and reply.leader_id else c.leader()
    assert isinstance(reply, wm.ClusterState) and reply.voters == [target]
    assert isinstance(c.write(target, kv.Set("after", "2")), wm.WriteDone)
    assert value_of(c.read(target, "after")) == "2"


def test_restart_recovers_from_storage_without_reapplying() -> None:
    c = formed([1, 2, 3])
    leader = c.leader()
    for i in range(20):
        c.write(leader, kv.Set(f"k{i}", str(i)))
    for node in (1, 2, 3):
        c.restart(node)
    leader = c.leader()
    assert isinstance(c.write(leader, kv.Set("k20", "20")), wm.WriteDone)
    for node in (1, 2, 3):
        assert value_of(c.read(node, "k0")) == "0"
        assert value_of(c.read(node, "k20")) == "20"


def test_trigger_snapshot_reports_what_it_made() -> None:
    c = formed([1, 2, 3])
    leader = c.leader()
    for i in range(5):
        c.write(leader, kv.Set(f"k{i}", "v"))
    done = c.reply(leader, c.send(leader, wm.TriggerSnapshot))
    assert isinstance(done, wm.SnapshotDone)
    assert done.index == c.workers[leader].core.applied_index and done.term >= 1
    again = c.reply(leader, c.send(leader, wm.TriggerSnapshot))
    assert isinstance(again, wm.SnapshotDone) and again.index == done.index


def test_leader_crash_then_writes_continue_and_nothing_acknowledged_is_lost() -> None:
    c = formed([1, 2, 3])
    leader = c.leader()
    acked = []
    for i in range(10):
        if isinstance(c.write(leader, kv.Set(f"k{i}", str(i))), wm.WriteDone):
            acked.append(i)
    c.down.add(leader)
    new_leader = c.leader()
    assert new_leader != leader
    assert isinstance(c.write(new_leader, kv.Set("after", "x")), wm.WriteDone)
    c.down.discard(leader)
    c.restart(leader)
    for i in acked:
        assert value_of(c.read(leader, f"k{i}")) == str(i)


@pytest.mark.parametrize("stale", [True])
def test_stale_read_is_served_locally(stale: bool) -> None:
    c = formed([1, 2, 3])
    leader = c.leader()
    c.write(leader, kv.Set("k", "v"))
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.down.add(leader)
    reply = c.read(follower, "k", linearizable=not stale)
    assert value_of(reply) in ("v", None)


def test_a_read_whose_readindex_is_lost_is_handed_back_for_retry() -> None:
    c = formed([1, 2, 3])
    leader = c.settle()
    follower = next(n for n in (1, 2, 3) if n != leader)
    c.down.add(leader)  # the forwarded ReadIndex request goes nowhere
    rid = c.send(follower, lambda r: wm.ClientRead(r, kv.encode_command(kv.Get("k")), True))
    reply = c.reply(follower, rid)
    assert isinstance(reply, wm.NotLeader)


EVENTS: list[str] = []


class OrderRecordingStorage(MemoryStorage):
    """Records each sync in EVENTS, so a test can see what happened before it."""

    def sync(self) -> None:
        EVENTS.append("sync")
        super().sync()


def test_leader_sends_appends_before_its_fsync_but_followers_never_do() -> None:
    c = Cluster([1, 2, 3], storage_factory=OrderRecordingStorage)
    c.reply(1, c.send(1, lambda r: wm.InitCluster(r, addrs([1, 2, 3]))))
    leader = c.settle()
    early: dict[int, list[object]] = {n: [] for n in (1, 2, 3)}

    def sender(n: int) -> Callable[[list[wm.FromWorker]], None]:
        def send_now(msgs: list[wm.FromWorker]) -> None:
            EVENTS.append(f"send{n}")
            early[n].append(msgs)
            for batch in msgs:  # deliver them, as the I/O process would
                assert isinstance(batch, wm.RaftSendBatch)
                for m in batch.messages:
                    c.workers[m.to_node].handle(wm.RaftReceive(n, m.payload), c.now_ms)
        return send_now

    for n, worker in c.workers.items():
        worker.send_now = sender(n)
    EVENTS.clear()
    c.workers[leader].handle(wm.ClientWrite(999, kv.encode_command(kv.Set("k", "v"))), c.now_ms)
    for out in c.workers[leader].pump(c.now_ms):
        assert not isinstance(out, wm.RaftSendBatch), "appends were sent after the fsync instead of before"
    assert EVENTS[:2] == [f"send{leader}", "sync"], EVENTS
    for _ in range(20):
        c.step()
    assert all(not early[n] for n in (1, 2, 3) if n != leader), "a follower sent before persisting"
    done = [r for r in c.replies[leader] if getattr(r, "request_id", None) == 999]
    assert done and isinstance(done[0], wm.WriteDone)
    assert value_of(c.read(leader, "k")) == "v"


def test_leader_answers_writes_committed_earlier_before_fsyncing_new_entries() -> None:
    """A Ready holding both newly committed entries (synced by an earlier pump) and new entries:
    the answers go out with the appends, before the new entries' fsync, not after it."""
    c = Cluster([1, 2, 3], storage_factory=OrderRecordingStorage)
    c.reply(1, c.send(1, lambda r: wm.InitCluster(r, addrs([1, 2, 3]))))
    leader = c.settle()
    followers = [n for n in (1, 2, 3) if n != leader]
    sent_early: list[wm.FromWorker] = []

    def send_now(msgs: list[wm.FromWorker]) -> None:
        EVENTS.append("send")
        sent_early.extend(msgs)
        for batch in msgs:
            if isinstance(batch, wm.RaftSendBatch):
                for m in batch.messages:
                    c.workers[m.to_node].handle(wm.RaftReceive(leader, m.payload), c.now_ms)

    c.workers[leader].send_now = send_now
    c.workers[leader].handle(wm.ClientWrite(901, kv.encode_command(kv.Set("a", "1"))), c.now_ms)
    assert not [o for o in c.workers[leader].pump(c.now_ms) if isinstance(o, wm.WriteDone)]
    for f in followers:  # their acknowledgements reach the leader: write 901 is committed
        for out in c.workers[f].pump(c.now_ms):
            if isinstance(out, wm.RaftSendBatch):
                for m in out.messages:
                    c.workers[m.to_node].handle(wm.RaftReceive(f, m.payload), c.now_ms)
    EVENTS.clear()
    sent_early.clear()
    c.workers[leader].handle(wm.ClientWrite(902, kv.encode_command(kv.Set("b", "2"))), c.now_ms)
    late = c.workers[leader].pump(c.now_ms)
    assert EVENTS[:2] == ["send", "sync"], EVENTS
    assert [o.request_id for o in sent_early if isinstance(o, wm.WriteDone)] == [901]  # before the sync
    assert not [o for o in late if isinstance(o, wm.WriteDone)]


def test_a_leader_that_is_its_own_quorum_answers_only_after_its_fsync() -> None:
    """A lone voter commits its own entries at once, while still sending appends (to a
    learner): those entries are answered after their sync, never with the appends."""
    c = Cluster([1], storage_factory=OrderRecordingStorage)
    c.reply(1, c.send(1, lambda r: wm.InitCluster(r, addrs([1]))))
    c.settle()
    c.add(2)
    state = c.reply(1, c.send(1, lambda r: wm.AddLearner(r, 2, "node-2")))
    assert isinstance(state, wm.ClusterState) and state.learners == [2]
    for _ in range(20):  # the learner catches up: nothing in flight to it
        c.step()
    sent_early: list[wm.FromWorker] = []

    def send_now(msgs: list[wm.FromWorker]) -> None:
        EVENTS.append("send")
        sent_early.extend(msgs)

    c.workers[1].send_now = send_now
    EVENTS.clear()
    c.workers[1].handle(wm.ClientWrite(903, kv.encode_command(kv.Set("a", "1"))), c.now_ms)
    out = c.workers[1].pump(c.now_ms)
    assert EVENTS[:2] == ["send", "sync"], EVENTS  # the append to the learner went first
    assert not [o for o in sent_early if isinstance(o, wm.WriteDone)]
    assert [o.request_id for o in out if isinstance(o, wm.WriteDone)] == [903]


def pump_leader_keeping_acks(c: Cluster, leader: int) -> list[tuple[int, wm.RaftReceive]]:
    """Pump the leader and deliver its messages to the followers, whose pumps' answers are
    returned undelivered: the leader's appends stay in flight until the test delivers them."""
    answers: list[tuple[int, wm.RaftReceive]] = []
    for out in c.workers[leader].pump(c.now_ms):
        if isinstance(out, wm.RaftSendBatch):
            for m in out.messages:
                c.workers[m.to_node].handle(wm.RaftReceive(leader, m.payload), c.now_ms)
        else:
            c.replies[leader].append(out)
    for f in (n for n in c.workers if n != leader):
        for out in c.workers[f].pump(c.now_ms):
            if isinstance(out, wm.RaftSendBatch):
                answers.extend((m.to_node, wm.RaftReceive(f, m.payload)) for m in out.messages)
    return answers


def test_leader_holds_client_writes_while_every_follower_has_an_append_in_flight() -> None:
    """Held writes are not proposed (nothing to sync) until a peer's message arrives, then go
    in arrival order; with nothing in flight a write is proposed at once."""
    c = Cluster([1, 2, 3], storage_factory=OrderRecordingStorage)
    c.reply(1, c.send(1, lambda r: wm.InitCluster(r, addrs([1, 2, 3]))))
    leader = c.settle()
    worker = c.workers[leader]
    EVENTS.clear()
    worker.handle(wm.ClientWrite(911, kv.encode_command(kv.Set("k", "1"))), c.now_ms)  # nothing in flight
    acks = pump_leader_keeping_acks(c, leader)
    assert EVENTS.count("sync") >= 1 and worker.core.log.last_index() == worker.core.log.committed + 1
    assert worker.core.new_entries_would_wait()  # its append is out to both followers
    last = worker.core.log.last_index()
    EVENTS.clear()
    for rid, value in ((912, "2"), (913, "3")):
        assert worker.handle(wm.ClientWrite(rid, kv.encode_command(kv.Set("k", value))), c.now_ms) == []
    assert worker.pump(c.now_ms) == [] and "sync" not in EVENTS  # held: no entry, no fsync
    assert worker.core.log.last_index() == last
    for to, ack in acks:  # the acknowledgements arrive: the held writes go first, in order
        c.workers[to].handle(ack, c.now_ms)
    assert worker.core.log.last_index() == last + 2
    for _ in range(50):
        c.step()
    done = {r.request_id for r in c.replies[leader] if isinstance(r, wm.WriteDone)}
    assert {911, 912, 913} <= done
    assert value_of(c.read(leader, "k")) == "3"


def leader_with_an_append_in_flight(rid: int) -> tuple[Cluster, int, RaftWorker]:
    """A formed cluster whose leader wrote once (`rid`) and has not heard the answers."""
    c = formed([1, 2, 3])
    leader = c.settle()
    worker = c.workers[leader]
    worker.handle(wm.ClientWrite(rid, kv.encode_command(kv.Set("a", "1"))), c.now_ms)
    pump_leader_keeping_acks(c, leader)  # the answers are lost
    assert worker.core.new_entries_would_wait()
    return c, leader, worker


def test_held_client_writes_go_after_the_hold_bound_when_no_follower_answers() -> None:
    c, leader, worker = leader_with_an_append_in_flight(921)
    c.now_ms = worker.next_deadline_ms()  # a heartbeat goes (and is lost): the core's next
    worker.tick(c.now_ms)                 # deadline is a heartbeat interval away
    pump_leader_keeping_acks(c, leader)
    last = worker.core.log.last_index()
    worker.handle(wm.ClientWrite(922, kv.encode_command(kv.Set("b", "2"))), c.now_ms)
    assert worker.next_deadline_ms() == c.now_ms + MAX_WRITE_HOLD_MS < worker.core.next_deadline_ms()
    worker.tick(c.now_ms + MAX_WRITE_HOLD_MS - 1)
    worker.pump(c.now_ms + MAX_WRITE_HOLD_MS - 1)
    assert worker.core.log.last_index() == last  # still held
    worker.tick(c.now_ms + MAX_WRITE_HOLD_MS)
    worker.pump(c.now_ms + MAX_WRITE_HOLD_MS)
    assert worker.core.log.last_index() == last + 1


def test_a_held_client_write_on_a_deposed_leader_is_refused_with_the_new_leader() -> None:
    c, leader, worker = leader_with_an_append_in_flight(931)
    worker.handle(wm.ClientWrite(932, kv.encode_command(kv.Set("b", "2"))), c.now_ms)  # held
    c.down.add(leader)
    for _ in range(MAX_STEPS):  # the others elect a new leader
        c.step()
        if any(w.core.is_leader for i, w in c.workers.items() if i != leader):
            break
    new_leader = next(i for i, w in c.workers.items() if i != leader and w.core.is_leader)
    c.down.discard(leader)
    for _ in range(50):
        c.step()
    refusals = [r for r in c.replies[leader] if getattr(r, "request_id", None) == 932]
    assert refusals and isinstance(refusals[0], (wm.NotLeader, wm.ErrorReply))
    if isinstance(refusals[0], wm.NotLeader):
        assert refusals[0].leader_id in (new_leader, 0)


def forwarded_results(c: Cluster, follower: int, leader: int, msg: ForwardedWrites | ForwardedReads,
                      count: int) -> dict[int, ForwardedResult]:
    """Hand `msg` (as the follower's I/O process sends it, aspen.forwarding) to the leader's
    worker and run the cluster until `count` ForwardedResults came back for `follower`."""
    c.workers[leader].handle(wm.RaftReceive(follower, encode_message(msg)), c.now_ms)
    results: dict[int, ForwardedResult] = {}
    for _ in range(MAX_STEPS):
        for out in c.workers[leader].pump(c.now_ms):
            if isinstance(out, wm.RaftSendBatch):
                for m in out.messages:
                    answer = decode_message(m.payload)
                    if m.to_node == follower and isinstance(answer, ForwardedResults):
                        results.update((r.request_id, r) for r in answer.results)
                    elif m.to_node in c.workers and m.to_node not in c.down:
                        c.workers[m.to_node].handle(wm.RaftReceive(leader, m.payload), c.now_ms)
        if len(results) >= count:
            return results
        c.step()
    raise AssertionError(f"forwarded requests unanswered: {results}")


def forward(c: Cluster, follower: int, leader: int, commands: list[kv.KvCommand]) -> list[ForwardedResult]:
    """What a follower's I/O process does with writes: ForwardedWrites to the leader's worker."""
    writes = [ForwardedWrite(100 + i, kv.encode_command(cmd)) for i, cmd in enumerate(commands)]
    msg = ForwardedWrites(follower, leader, c.workers[follower].core.term, writes)
    results = forwarded_results(c, follower, leader, msg, len(writes))
    return [results[w.request_id] for w in writes]


def test_a_follower_worker_refers_writes_to_its_leader_which_answers_forwarded_writes_with_results() -> None:
    c = formed([1, 2, 3])
    leader = c.settle()
    follower = next(i for i in (1, 2, 3) if i != leader)
    reply = c.write(follower, kv.Set("k", "v0"))
    assert reply == wm.NotLeader(reply.request_id, leader)  # type: ignore[union-attr]
    assert c.workers[follower].kv.read(kv.Get("k")) == kv.GetResult(None)  # nothing proposed
    results = forward(c, follower, leader, [kv.Set("k", "v1"), kv.CompareAndSwap("k", "v1", "v2"),
                                            kv.CompareAndSwap("k", "nope", "v3")])
    assert [r.status for r in results] == [200, 200, 200]
    assert kv.decode_result(results[1].result) == kv.CasResult(True, "v2")  # the leader's apply result
    assert kv.decode_result(results[2].result) == kv.CasResult(False, "v2")
    assert c.workers[leader].kv.read(kv.Get("k")) == kv.GetResult("v2")
    # A forwarded answer that reaches a worker (none waits there) changes nothing.
    stray = ForwardedResults(leader, follower, c.workers[leader].core.term, results)
    c.workers[follower].handle(wm.RaftReceive(leader, encode_message(stray)), c.now_ms)
    assert not [o for o in c.workers[follower].pump(c.now_ms) if not isinstance(o, (wm.RaftSendBatch, wm.StateUpdate))]


def test_the_leader_serves_forwarded_reads_after_a_read_index_round_and_refuses_what_it_cannot() -> None:
    c = formed([1, 2, 3])
    leader = c.settle()
    follower, other = (i for i in (1, 2, 3) if i != leader)
    assert isinstance(c.write(leader, kv.Set("k", "v1")), wm.WriteDone)
    get = kv.encode_command(kv.Get("k"))
    bad = [ForwardedRead(2, b"\xc1"), ForwardedRead(3, kv.encode_command(kv.Set("x", "y")))]
    msg = ForwardedReads(follower, leader, c.workers[follower].core.term, [ForwardedRead(1, get), *bad])
    results = forwarded_results(c, follower, leader, msg, 3)
    assert results[1].status == 200 and kv.decode_result(results[1].result) == kv.GetResult("v1")
    assert results[2].status == 400 and results[3].status == 400  # garbage, not a read
    # A follower asked in its place refers the read to the leader; nothing is served there.
    not_leader = ForwardedReads(follower, other, 1, [ForwardedRead(9, get)])
    c.workers[other].handle(wm.RaftReceive(follower, encode_message(not_leader)), c.now_ms)
    answers = [decode_message(m.payload) for b in c.workers[other].pump(c.now_ms)
               if isinstance(b, wm.RaftSendBatch) for m in b.messages if m.to_node == follower]
    refused = [r for a in answers if isinstance(a, ForwardedResults) for r in a.results]
    assert [(r.request_id, r.status, r.leader_id) for r in refused] == [(9, STATUS_NOT_LEADER, leader)]


def test_writes_forwarded_to_a_node_that_lost_leadership_come_back_as_not_leader() -> None:
    c = formed([1, 2, 3])
    leader = c.settle()
    follower, other = (i for i in (1, 2, 3) if i != leader)
    # `other` is not the leader: a forwarded write sent to it is refused, nothing is proposed.
    last = c.workers[other].core.last_index
    msg = ForwardedWrites(follower, other, c.workers[follower].core.term,
                          [ForwardedWrite(77, kv.encode_command(kv.Set("x", "y")))])
    c.workers[other].handle(wm.RaftReceive(follower, encode_message(msg)), c.now_ms)
    out = c.workers[other].pump(c.now_ms)
    answers = [decode_message(m.payload) for b in out if isinstance(b, wm.RaftSendBatch) for m in b.messages
               if m.to_node == follower]
    results = [r for a in answers if isinstance(a, ForwardedResults) for r in a.results]
    assert [(r.request_id, r.leader_id) for r in results] == [(77, leader)]
    assert c.workers[other].core.last_index == last
    # A non-member cannot have writes proposed by forwarding them.
    stranger = ForwardedWrites(9, leader, 1, [ForwardedWrite(5, kv.encode_command(kv.Set("x", "z")))])
    before = c.workers[leader].core.last_index
    c.workers[leader].handle(wm.RaftReceive(9, encode_message(stranger)), c.now_ms)
    c.workers[leader].pump(c.now_ms)
    assert c.workers[leader].core.last_index == before
