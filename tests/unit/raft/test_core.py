"""Focused tests of the sans-IO Raft core, aioquic style: build cores, move outputs by hand,
advance time by hand, assert on messages, Ready fields and deadlines."""

from __future__ import annotations

import random

import pytest

from aspen.errors import ConfigError, LimitExceeded, UsageError, WireDecodeError
from aspen.raft.config import RaftConfig
from aspen.raft.core import MAX_PROPOSAL_SIZE, RaftCore
from aspen.raft.memory_storage import MemoryStorage
from aspen.raft.messages import (
    MAX_ENTRIES_PER_APPEND,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftMessage,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    decode_message,
    encode_message,
)
from aspen.raft.ready import ProposalDropped, Ready, Role, write_ready
from aspen.raft.types import Entry, EntryKind, HardState, Membership, Snapshot, SnapshotMeta


def members(*ids: int, learners: tuple[int, ...] = ()) -> Membership:
    return Membership(frozenset(ids), frozenset(learners), {i: f"n{i}" for i in ids + learners})


class Net:
    """Cores wired by hand: `pump()` runs each worker loop and delivers until quiet."""

    def __init__(self, n: int = 3, **cfg: int) -> None:
        m = members(*range(1, n + 1))
        self.now_ms = 0
        self.cores: dict[int, RaftCore] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: list[tuple[int, int, bool]] = []  # (request_id, index, ok), any node
        self.dropped: set[int] = set()
        self.queue: list[RaftMessage] = []
        for i in range(1, n + 1):
            self.storages[i] = MemoryStorage(m)
            self.applied[i] = []
            self.cores[i] = RaftCore(self.config(i, **cfg), self.storages[i], rng=random.Random(i))

    @staticmethod
    def config(i: int, **cfg: int) -> RaftConfig:
        base = dict(heartbeat_interval_ms=10, election_timeout_min_ms=50, election_timeout_max_ms=100)
        base.update(cfg)
        return RaftConfig(node_id=i, **base)  # type: ignore[arg-type]

    def drain(self, i: int) -> None:
        core, st = self.cores[i], self.storages[i]
        while (rd := core.ready()) is not None:
            write_ready(st, rd)
            if rd.must_sync:
                st.sync()
            self.queue.extend(rd.messages)
            self.applied[i].extend(rd.committed_entries)
            self.read_states.extend((r.request_id, r.index, r.ok) for r in rd.read_states)
            core.advance(rd)

    def pump(self, max_rounds: int = 100) -> None:
        for i in self.cores:
            self.drain(i)
        for _ in range(max_rounds):
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if m.to_id in self.dropped or m.from_id in self.dropped or m.to_id not in self.cores:
                    continue
                self.cores[m.to_id].step(m, self.now_ms)
                self.drain(m.to_id)
        raise AssertionError("did not settle")

    def elect(self, i: int = 1) -> RaftCore:
        self.cores[i].campaign(self.now_ms)
        self.pump()
        assert self.cores[i].is_leader
        return self.cores[i]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"node_id": 0}, "node_id"),
        ({"heartbeat_interval_ms": 500, "election_timeout_min_ms": 500}, "election_timeout_min_ms"),
        ({"election_timeout_min_ms": 3000, "election_timeout_max_ms": 3000}, "election_timeout_max_ms"),
        ({"max_entries_per_append": MAX_ENTRIES_PER_APPEND + 1}, "max_entries_per_append"),
        ({"max_append_size_bytes": 11 * 1024 * 1024}, "max_append_size_bytes"),
        ({"snapshot_chunk_size_bytes": 0}, "snapshot_chunk_size_bytes"),
        ({"max_inflight_appends": 257}, "max_inflight_appends"),
        ({"commit_notify_delay_ms": -1}, "commit_notify_delay_ms"),
    ],
)
def test_config_rejects_nonsense(fields: dict[str, int], key: str) -> None:
    cfg = RaftConfig(**{"node_id": 1, **fields})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        RaftCore(cfg, MemoryStorage(members(1)), rng=random.Random(0))
    assert info.value.key == key


def test_config_defaults_are_the_rust_aspen_timers() -> None:
    cfg = RaftConfig(node_id=1)
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_min_ms, cfg.election_timeout_max_ms) == (500, 1500, 3000)
    cfg.validate()


# --------------------------------------------------------------------------- election


def test_election_deadline_is_randomized_within_bounds() -> None:
    deadlines = set()
    for seed in range(20):
        core = RaftCore(Net.config(1), MemoryStorage(members(1, 2, 3)), rng=random.Random(seed))
        core.tick(1000)
        deadline = core.next_deadline_ms()
        assert 1050 <= deadline < 1100
        deadlines.add(deadline)
    assert len(deadlines) > 5


def test_single_node_elects_itself_on_timeout_and_commits() -> None:
    storage = MemoryStorage(members(1))
    core = RaftCore(Net.config(1), storage, rng=random.Random(0))
    core.tick(0)
    assert core.ready() is None  # arming the election timer is not output
    core.tick(core.next_deadline_ms())
    rd = core.ready()
    assert rd is not None and core.is_leader and core.term == 1
    assert [e.kind for e in rd.entries] == [EntryKind.NOOP]
    assert rd.hard_state == HardState(1, 1, 1) and rd.must_sync
    assert [e.index for e in rd.committed_entries] == [1]  # persisted first, then applied
    storage.append(rd.entries)
    storage.set_hard_state(rd.hard_state)
    storage.sync()
    core.advance(rd)
    assert core.propose(b"x", 0) == (1, 2)


def test_pre_vote_does_not_change_term_or_vote() -> None:
    net = Net()
    net.cores[2].campaign(0)
    rd = net.cores[2].ready()
    assert rd is not None
    assert rd.hard_state is None  # term and vote untouched: nothing to persist
    assert {type(m) for m in rd.messages} == {RequestVote}
    assert all(m.pre_vote and m.term == 1 for m in rd.messages if isinstance(m, RequestVote))
    assert net.cores[2].term == 0 and net.cores[2].role is Role.PRE_CANDIDATE


def test_vote_is_persisted_before_the_vote_request_is_sent() -> None:
    core = RaftCore(Net.config(1, pre_vote=False), MemoryStorage(members(1, 2, 3)), rng=random.Random(0))  # type: ignore[arg-type]
    core.campaign(0)
    rd = core.ready()
    assert rd is not None
    assert rd.hard_state == HardState(1, 1, 0) and rd.must_sync and rd.messages


def test_candidate_with_shorter_log_loses() -> None:
    """openraft t11_elect: the more up-to-date log wins (Raft §5.4.1)."""
    net = Net()
    leader = net.elect(1)
    net.dropped = {3}
    leader.propose(b"a", 0)
    net.pump()
    net.dropped = set()
    net.now_ms = 1000  # leases expired
    net.cores[3].campaign(net.now_ms)
    net.pump()
    assert not net.cores[3].is_leader and net.cores[3].term == 1


def test_follower_in_lease_ignores_vote_request() -> None:
    net = Net()
    net.elect(1)
    vote = RequestVote(3, 2, 5, 100, 5)
    net.cores[2].step(vote, net.now_ms)
    assert net.cores[2].term == 1 and net.cores[2].ready() is None


# --------------------------------------------------------------------------- replication


def test_ready_advance_contract_is_enforced() -> None:
    net = Net()
    core = net.cores[1]
    core.campaign(0)
    rd = core.ready()
    assert rd is not None
    with pytest.raises(UsageError):
        core.tick(1)
    with pytest.raises(UsageError):
        core.ready()
    with pytest.raises(UsageError):
        core.advance(Ready())
    core.advance(rd)
    core.tick(1)


def test_proposal_on_follower_is_dropped_with_leader_hint() -> None:
    net = Net()
    net.elect(1)
    with pytest.raises(ProposalDropped) as info:
        net.cores[2].propose(b"x", 0)
    assert info.value.reason == "not_leader" and info.value.leader_id == 1


def test_oversized_proposal_is_refused() -> None:
    net = Net()
    leader = net.elect(1)
    with pytest.raises(LimitExceeded):
        leader.propose(b"x" * (MAX_PROPOSAL_SIZE + 1), 0)


def test_batching_respects_max_entries_and_pipelining_bound() -> None:
    net = Net(max_entries_per_append=10, max_inflight_appends=3)
    leader = net.elect(1)
    leader.propose_batch([b"x"] * 100, 0)
    net.drain(1)
    to2 = [m for m in net.queue if isinstance(m, AppendEntries) and m.to_id == 2]
    assert [len(m.entries) for m in to2] == [10, 10, 10]  # 3 in flight, then wait for acks
    net.pump()
    assert leader.commit_index == 101
    assert len(net.applied[1]) == 101
    # The followers learn the final commit index from the deferred commit-only append (nothing
    # else was left to carry it), due `commit_notify_delay_ms` (capped at the heartbeat) later.
    assert leader.next_deadline_ms() <= net.now_ms + Net.config(1).heartbeat_interval_ms
    net.now_ms = leader.next_deadline_ms()
    leader.tick(net.now_ms)
    net.pump()
    assert all(len(net.applied[i]) == 101 for i in (1, 2, 3))


def test_a_commit_with_nothing_to_carry_it_is_sent_after_the_delay_not_at_once() -> None:
    net = Net(heartbeat_interval_ms=100, election_timeout_min_ms=500, election_timeout_max_ms=1000,
              commit_notify_delay_ms=20)
    leader = net.elect(1)
    net.now_ms = leader.next_deadline_ms()  # the no-op's commit reaches the followers
    leader.tick(net.now_ms)
    net.pump()
    commit_before = net.cores[2].commit_index
    assert commit_before == leader.commit_index == 1
    leader.propose(b"w", net.now_ms)
    net.pump()
    assert leader.commit_index == commit_before + 1
    assert net.cores[2].commit_index == commit_before  # no empty append was sent just for it
    assert leader.next_deadline_ms() == net.now_ms + 20
    net.now_ms += 19
    leader.tick(net.now_ms)
    net.drain(1)
    assert not net.queue
    net.now_ms += 1
    leader.tick(net.now_ms)
    net.pump()
    assert net.cores[2].commit_index == net.cores[3].commit_index == leader.commit_index


def test_commit_notify_delay_zero_tells_followers_at_once() -> None:
    net = Net(commit_notify_delay_ms=0)
    leader = net.elect(1)
    leader.propose(b"w", net.now_ms)
    net.pump()
    assert net.cores[2].commit_index == net.cores[3].commit_index == leader.commit_index


def test_commit_only_counts_entries_of_the_current_term() -> None:
    """Raft §5.4.2 / Figure 8: a leader never commits an older term's entry by counting replicas."""
    net = Net(max_entries_per_append=1)
    leader = net.elect(1)
    net.dropped = {2, 3}
    leader.propose(b"old", 0)  # 1/2, on node 1 only
    net.pump()
    net.dropped = set()
    net.now_ms = 1000
    # Node 1 loses leadership and wins it back at term 2 (its log is the longest).
    net.cores[1] = RaftCore(Net.config(1, max_entries_per_append=1), net.storages[1], rng=random.Random(9))
    net.cores[1].campaign(net.now_ms)
    leader = net.cores[1]
    # Deliver step by step until a follower acknowledges index 2 (the term-1 entry).
    for _ in range(50):
        net.drain(1)
        acked_old = any(isinstance(m, AppendEntriesResponse) and not m.reject and m.index == 2 for m in net.queue)
        if acked_old:
            break
        batch, net.queue = net.queue, []
        for m in batch:
            net.cores[m.to_id].step(m, net.now_ms)
            net.drain(m.to_id)
    assert leader.is_leader and leader.term == 2
    for m in [m for m in net.queue if isinstance(m, AppendEntriesResponse) and m.index == 2]:
        net.queue.remove(m)
        leader.step(m, net.now_ms)
    net.drain(1)
    assert leader.log.term(2) == 1
    assert leader.commit_index == 1  # a majority holds 1/2, but it is not of term 2
    net.pump()
    assert leader.commit_index == 3  # the no-op 2/3 commits, and 1/2 with it


def test_lost_append_is_retransmitted_after_a_silent_heartbeat_round() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose(b"a", 0)
    net.drain(1)
    net.queue = [m for m in net.queue if m.to_id != 3]  # the append to 3 is lost
    net.pump()
    for _ in range(3):
        net.now_ms += 10
        leader.tick(net.now_ms)
        net.pump()
    assert net.cores[3].commit_index == 2


def test_follower_duplicate_and_stale_appends_are_harmless() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose(b"a", 0)
    net.drain(1)
    app = next(m for m in net.queue if isinstance(m, AppendEntries) and m.to_id == 2)
    net.pump()
    net.cores[2].step(app, net.now_ms)  # duplicate, behind the follower's commit
    net.drain(2)
    assert net.storages[2].last_index() == 2
    assert [m for m in net.queue if isinstance(m, AppendEntriesResponse)][0].index >= 2


# --------------------------------------------------------------------------- reads, membership, transfer


def test_read_index_on_single_voter_is_immediate_after_its_first_commit() -> None:
    net = Net(1)
    leader = net.elect(1)
    leader.read_index(7, 0)
    rd = leader.ready()
    assert rd is not None and [(r.request_id, r.index, r.ok) for r in rd.read_states] == [(7, 1, True)]


def test_one_read_round_at_a_time_and_reads_arriving_meanwhile_share_the_next() -> None:
    from aspen.raft.messages import Heartbeat
    net = Net(3)
    leader = net.elect(1)
    net.now_ms = leader.next_deadline_ms()  # the no-op's commit reaches the followers
    leader.tick(net.now_ms)
    net.pump()
    leader.read_index(1, net.now_ms)
    net.drain(1)
    first_round = [m for m in net.queue if isinstance(m, Heartbeat)]
    assert len(first_round) == 2
    for rid in (2, 3):  # while round 1 is out: no new heartbeats
        leader.read_index(rid, net.now_ms)
        net.drain(1)
    assert len([m for m in net.queue if isinstance(m, Heartbeat)]) == 2
    net.pump()  # round 1 answered -> read 1 confirmed, round 2 sent for reads 2 and 3 -> answered
    assert sorted(rid for rid, _, ok in net.read_states if ok) == [1, 2, 3]


def test_membership_change_rules() -> None:
    net = Net(3, max_learner_lag_entries=0)
    leader = net.elect(1)
    with pytest.raises(ValueError):
        leader.change_membership(Membership(frozenset({1}), frozenset(), {1: "n1"}), 0)  # two voters out
    index = leader.change_membership(members(1, 2, 3, learners=(4,)), 0)
    assert leader.membership.learners == {4}  # takes effect when appended
    with pytest.raises(ProposalDropped, match="config_pending"):
        leader.change_membership(members(1, 2), 0)
    net.pump()
    assert leader.commit_index >= index
    with pytest.raises(ProposalDropped, match="learner_lagging"):
        leader.change_membership(members(1, 2, 3, 4), 0)  # 4 never acked anything


def test_a_learner_that_never_answered_is_not_promoted_even_on_a_short_log() -> None:
    net = Net(3)  # max_learner_lag_entries 100: any learner is "within the lag" of this log
    leader = net.elect(1)
    leader.change_membership(members(1, 2, 3, learners=(4,)), 0)
    net.pump()  # node 4 does not exist: nothing it was sent is ever acknowledged
    assert leader.progress[4].match == 0 and leader.last_index < 100
    with pytest.raises(ProposalDropped, match="learner_lagging"):
        leader.change_membership(members(1, 2, 3, 4), 0)


def test_removed_leader_steps_down_after_the_change_commits() -> None:
    net = Net(3)
    leader = net.elect(1)
    leader.change_membership(members(2, 3), 0)
    net.pump()
    assert not net.cores[1].is_leader
    assert net.cores[2].membership.voters == {2, 3}


def test_transfer_leadership_sends_timeout_now_to_an_up_to_date_target() -> None:
    net = Net(3)
    leader = net.elect(1)
    leader.transfer_leadership(2, 0)
    rd = leader.ready()
    assert rd is not None and any(isinstance(m, TimeoutNow) and m.to_id == 2 for m in rd.messages)
    leader.advance(rd)
    with pytest.raises(ProposalDropped, match="transferring"):
        leader.propose(b"x", 0)
    net.queue.extend(rd.messages)
    net.pump()
    assert net.cores[2].is_leader and net.cores[2].term == 2


# --------------------------------------------------------------------------- snapshots


def test_snapshot_policy_asks_for_a_snapshot_and_compaction() -> None:
    net = Net(1, snapshot_interval_entries=5, snapshot_keep_entries=2)
    leader = net.cores[1]
    leader.campaign(0)
    taken = []
    for i in range(12):
        if i:
            leader.propose(b"x", 0)
        while (rd := leader.ready()) is not None:
            st = net.storages[1]
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state:
                st.set_hard_state(rd.hard_state)
            st.sync()
            if rd.snapshot_to_take is not None:
                taken.append((rd.snapshot_to_take.index, rd.compact_to_index))
                st.create_snapshot(Snapshot(rd.snapshot_to_take, b"sm"))
                st.compact(rd.compact_to_index)
            leader.advance(rd)
    assert taken == [(5, 3), (10, 8)]
    assert net.storages[1].first_index() == 9
    leader.request_snapshot(0)
    rd = leader.ready()
    assert rd is not None and rd.snapshot_to_take is not None and rd.snapshot_to_take.index == 12


# --------------------------------------------------------------------------- storage and wire


def test_memory_storage_crash_loses_only_unsynced_writes() -> None:
    st = MemoryStorage(members(1))
    st.append([Entry(1, 1), Entry(1, 2)])
    st.set_hard_state(HardState(1, 1, 0))
    st.sync()
    st.append([Entry(2, 2), Entry(2, 3)])  # overwrites 2, not synced
    st.set_hard_state(HardState(2, 1, 0))
    st.crash()
    assert st.last_index() == 2 and st.term(2) == 1
    assert st.initial_state()[0] == HardState(1, 1, 0)


def test_memory_storage_compaction_and_bounds() -> None:
    st = MemoryStorage(members(1))
    st.append([Entry(1, i) for i in range(1, 11)])
    st.sync()
    st.create_snapshot(Snapshot(SnapshotMeta(8, 1, members(1)), b""))
    st.compact(6)
    assert (st.first_index(), st.last_index(), st.term(6)) == (7, 10, 1)
    assert [e.index for e in st.entries(7, 11, 1 << 30)] == [7, 8, 9, 10]
    assert len(st.entries(7, 11, 1)) == 1  # at least one entry whatever the size limit


ALL_MESSAGES: list[RaftMessage] = [
    AppendEntries(1, 2, 3, 4, 2, [Entry(3, 5, EntryKind.CONFIG, b"c")], 4),
    AppendEntriesResponse(2, 1, 3, 4, True, 2, 1),
    RequestVote(1, 2, 3, 4, 2, True, False),
    RequestVoteResponse(2, 1, 3, True, True),
    Heartbeat(1, 2, 3, 4, 9),
    HeartbeatResponse(2, 1, 3, 9, True, 0),
    InstallSnapshot(1, 2, 3, SnapshotMeta(9, 2, members(1, 2)), 0, b"abc", False),
    InstallSnapshotResponse(2, 1, 3, 9, 2, 3, False),
    TimeoutNow(1, 2, 3),
    ReadIndexRequest(2, 1, 3, 77),
    ReadIndexResponse(1, 2, 3, 77, 9, True),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: RaftMessage) -> None:
    assert decode_message(encode_message(msg)) == msg


def test_decoder_enforces_bounds_and_rejects_garbage() -> None:
    too_many = AppendEntries(1, 2, 1, 0, 0, [Entry(1, i) for i in range(MAX_ENTRIES_PER_APPEND + 1)], 0)
    with pytest.raises(WireDecodeError):
        decode_message(encode_message(too_many))
    with pytest.raises(WireDecodeError):
        decode_message(b"\x93garbage")


def test_malformed_append_is_dropped_not_raised() -> None:
    net = Net()
    net.elect(1)
    follower = net.cores[2]
    before = net.storages[2].last_index()
    gap = AppendEntries(1, 2, 1, 1, 1, [Entry(1, 5)], 1)  # index 5 right after prev 1
    bad_conf = AppendEntries(1, 2, 1, 1, 1, [Entry(1, 2, EntryKind.CONFIG, b"\xc1garbage")], 1)
    future_term = AppendEntries(1, 2, 1, 1, 1, [Entry(7, 2)], 1)
    for msg in (gap, bad_conf, future_term):
        follower.step(msg, 0)
    net.drain(2)
    assert follower.malformed_messages == 3
    assert net.storages[2].last_index() == before


def test_memory_storage_satisfies_the_storage_protocol() -> None:
    from aspen.raft.types import RaftStorage

    storage: RaftStorage = MemoryStorage(members(1))  # mypy checks the structure
    for name in ("initial_state", "first_index", "last_index", "term", "entries", "snapshot",
                 "apply_snapshot", "append", "set_hard_state", "sync", "create_snapshot", "compact"):
        assert callable(getattr(storage, name))


def test_restart_resumes_applying_after_the_snapshot_not_the_compaction_point() -> None:
    """Found by the simulator (seed 1538): with trailing entries kept behind a snapshot, the
    state machine restarts from the snapshot, so `applied` must start at its index."""
    st = MemoryStorage(members(1, 2, 3))
    st.append([Entry(1, i) for i in range(1, 6)])
    st.set_hard_state(HardState(1, 1, 2))  # the durable commit may lag the snapshot
    st.sync()
    st.create_snapshot(Snapshot(SnapshotMeta(4, 1, members(1, 2, 3)), b"sm@4"))
    st.compact(2)
    core = RaftCore(Net.config(1), st, rng=random.Random(0))
    assert (core.applied_index, core.commit_index) == (4, 4)
    assert core.log.first_index() == 3


def test_lower_term_vote_request_is_answered_with_our_term() -> None:
    """Raft Fig. 2 (found by sim seed 450): a candidate behind in term must learn the term."""
    core = RaftCore(Net.config(2, pre_vote=False), MemoryStorage(members(1, 2, 3)), rng=random.Random(0))  # type: ignore[arg-type]
    core.campaign(0)
    core.campaign(0)  # term 2
    rd = core.ready()
    assert rd is not None
    core.advance(rd)
    core.step(RequestVote(1, 2, 1, 10, 1), 0)
    rd = core.ready()
    assert rd is not None and rd.messages == [RequestVoteResponse(2, 1, 2, False, False)]


def test_forwarded_read_fails_at_once_when_the_leader_changes() -> None:
    net = Net()
    net.elect(1)
    follower = net.cores[2]
    follower.read_index(5, 0)
    follower.read_index(6, 0)
    rd = follower.ready()
    assert rd is not None and [type(m) for m in rd.messages] == [ReadIndexRequest]  # one for both
    ctx = rd.messages[0].request_id
    follower.advance(rd)
    follower.read_index(7, 0)  # asked, not sent yet
    follower.step(Heartbeat(3, 2, 2, 0), 0)  # a new leader (3) at term 2
    rd = follower.ready()
    assert rd is not None and sorted((r.request_id, r.ok) for r in rd.read_states) == [(5, False), (6, False), (7, False)]
    assert not [m for m in rd.messages if isinstance(m, ReadIndexRequest)]
    follower.advance(rd)
    follower.step(ReadIndexResponse(1, 2, 2, ctx, 9, True), 0)  # a late answer is ignored
    rd = follower.ready()
    assert rd is None or not rd.read_states


def test_empty_batch_is_a_no_op() -> None:
    net = Net()
    leader = net.elect(1)
    assert leader.propose_batch([], 0) == (1, 2)
    assert leader.last_index == 1
