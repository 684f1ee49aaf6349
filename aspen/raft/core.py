"""RaftCore: the sans-IO Raft state machine (etcd's raft.go + rawnode.go, in one class).

Rules of this module:

- No I/O, no clock, no global randomness: inputs are method calls carrying `now_ms`; outputs are
  collected and handed out by `ready()` (see `aspen/raft/ready.py` for the worker's contract).
  The randomized election timeout comes from the `random.Random` passed in.
- Roles: FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER; one `_step_<role>` per role as in etcd.
- Pre-vote (thesis §9.6) and check-quorum (thesis §6.2) are on by default: a node that still
  hears from a leader (its *lease*, election_timeout_min_ms) ignores vote requests, so a node
  rejoining after a partition cannot depose a healthy leader; a leader that has not heard from
  a quorum within election_timeout_min_ms steps down.
- Membership changes are one voter at a time (thesis §4.1): a config takes effect as soon as it
  is appended (leader or follower), and a leader accepts a new change only when the previous
  one is committed and it has committed an entry of its own term (the fix for the
  single-server-change bug, Ongaro's raft-dev post of 2015).
- Commit only counts entries of the current term (Raft §5.4.2).

Timers are absolute deadlines in `now_ms`; `next_deadline_ms()` tells the adapter when to call
`tick()`. Between `ready()` and `advance()` no input is accepted (UsageError).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from aspen.errors import LimitExceeded, UsageError
from aspen.raft.config import APPEND_HEADROOM_SIZE, RaftConfig
from aspen.raft.messages import (
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
)
from aspen.raft.leader import LeaderMixin
from aspen.raft.progress import Progress
from aspen.raft.raft_log import RaftLog
from aspen.raft.read_only import MAX_PENDING_READS, ReadOnly
from aspen.raft.ready import ProposalDropped, ReadState, Ready, Role, SoftState
from aspen.raft.types import (
    ENTRY_OVERHEAD_BYTES,
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Membership,
    RaftStorage,
    Snapshot,
    SnapshotMeta,
    decode_membership,
    encode_membership,
)
from aspen.units import GiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

if TYPE_CHECKING:  # only the type: the core never touches the global random generator
    import random

logger = logging.getLogger(__name__)

# A proposal must fit one AppendEntries message with its headroom.
MAX_PROPOSAL_SIZE = MAX_RPC_MESSAGE_SIZE - APPEND_HEADROOM_SIZE - ENTRY_OVERHEAD_BYTES
# Appended but uncommitted entries on a leader before proposals are refused (etcd's
# MaxUncommittedEntriesSize idea, counted in entries): a leader cut off from its quorum must not
# grow its log without bound. guess: revisit.
MAX_UNCOMMITTED_ENTRIES = 100_000
# Largest snapshot a follower buffers in memory while receiving chunks. guess: revisit when the
# worker streams snapshots to disk.
MAX_SNAPSHOT_SIZE = 4 * GiB
# Entries read per storage call while scanning the log for CONFIG entries at startup.
_SCAN_SIZE_BYTES = 64 * 1024 * 1024


class RaftCore(LeaderMixin):
    """One Raft node. See the module docstring for the rules and `Ready` for the output contract.

    Inputs: `tick`, `step`, `propose`, `propose_batch`, `read_index`, `change_membership`,
    `transfer_leadership`, `request_snapshot`, each with `now_ms`. Outputs: `ready()`/`advance()`.
    """

    def __init__(self, config: RaftConfig, storage: RaftStorage, *, rng: random.Random) -> None:
        config.validate()
        self.id = config.node_id
        self._cfg = config
        self._rng = rng
        self._storage = storage
        hs, base_membership = storage.initial_state()
        self.log = RaftLog(storage)
        # The snapshot may be ahead of the compaction point (trailing entries are kept behind
        # it): the state machine restarts from the snapshot, so applied starts there.
        snap_index = storage.snapshot().meta.index
        self.log.restart_at(snap_index)
        self._configs: list[tuple[int, Membership]] = [(snap_index, base_membership)]
        self._scan_configs(storage, snap_index + 1, storage.last_index())
        self.membership = self._configs[-1][1]
        self.term = hs.term
        self.vote = hs.vote
        self.log.commit_to(hs.commit)
        self.role = Role.FOLLOWER
        self.leader_id = NO_NODE
        self._now_ms = 0
        self._election_deadline_ms = -1  # armed at the first tick
        self._heartbeat_deadline_ms = 0
        self._check_quorum_deadline_ms = 0
        self._commit_notify_deadline_ms = -1  # leader: a deferred commit-only append is due
        self._leader_contact_ms = -(1 << 62)  # last time we heard from a leader (the lease)
        self._votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self._msgs: list[RaftMessage] = []
        self._read_states: list[ReadState] = []
        self._reads = ReadOnly()
        # Follower reads: those asked since the last Ready go to the leader as one ReadIndexRequest
        # (its context id answers them all); then remembered by context until answered.
        self._reads_to_forward: list[int] = []
        self._forwarded_reads: dict[int, tuple[int, list[int]]] = {}  # ctx -> (leader, request ids)
        self._forwarded_read_count = 0  # request ids in both
        self._next_read_ctx = 1
        self._flush_needed = False
        self._pending_conf_index = 0
        self._transfer_target = NO_NODE
        self._transfer_deadline_ms = 0
        self._last_snapshot_index = snap_index
        self._snapshot_requested = False
        self._recv_snapshot_meta: SnapshotMeta | None = None
        self._recv_snapshot_buf = bytearray()
        self._prev_hs = hs
        self._prev_soft = SoftState(NO_NODE, Role.FOLLOWER)
        self._outstanding: Ready | None = None
        self.malformed_messages = 0  # remote garbage dropped (a metric for the worker)
        self._log = logger  # for LeaderMixin

    def _scan_configs(self, storage: RaftStorage, lo: int, last: int) -> None:
        while lo <= last:
            chunk = storage.entries(lo, last + 1, _SCAN_SIZE_BYTES)
            for e in chunk:
                if e.kind is EntryKind.CONFIG:
                    self._configs.append((e.index, decode_membership(e.data)))
            lo = chunk[-1].index + 1

    # ------------------------------------------------------------------ status

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    def next_deadline_ms(self) -> int:
        """When `tick` must next be called (absolute, in the caller's now_ms)."""
        if self.role is Role.LEADER:
            deadline = min(self._heartbeat_deadline_ms, self._check_quorum_deadline_ms)
            if self._commit_notify_deadline_ms >= 0:
                deadline = min(deadline, self._commit_notify_deadline_ms)
            if self._transfer_target != NO_NODE:
                deadline = min(deadline, self._transfer_deadline_ms)
            return deadline
        return max(self._election_deadline_ms, 0)

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at log `index` (the last CONFIG entry at or before it)."""
        for cidx, m in reversed(self._configs):
            if cidx <= index:
                return m
        return self._configs[0][1]

    # ------------------------------------------------------------------ inputs

    def _enter(self, now_ms: int) -> None:
        if self._outstanding is not None:
            raise UsageError("advance(ready) must be called before any other input")
        if now_ms > self._now_ms:
            self._now_ms = now_ms

    def tick(self, now_ms: int) -> None:
        """Fire the timers due at `now_ms`: heartbeats, check-quorum, elections, transfer abort."""
        self._enter(now_ms)
        if self._election_deadline_ms < 0:
            self._reset_election_timer()
        if self.role is Role.LEADER:
            if now_ms >= self._heartbeat_deadline_ms:
                self._heartbeat_deadline_ms = now_ms + self._cfg.heartbeat_interval_ms
                self._broadcast_heartbeat()
            if now_ms >= self._check_quorum_deadline_ms:
                self._check_quorum_deadline_ms = now_ms + self._cfg.election_timeout_min_ms
                if self._cfg.check_quorum and not self._quorum_active():
                    logger.info("node=%d stepping down: no quorum heard term=%d", self.id, self.term)
                    self._become_follower(self.term, NO_NODE)
                    return
            if self._transfer_target != NO_NODE and now_ms >= self._transfer_deadline_ms:
                self._transfer_target = NO_NODE  # thesis §3.10: abort after an election timeout
            if 0 <= self._commit_notify_deadline_ms <= now_ms:
                self._commit_notify_deadline_ms = -1
                self._flush_appends(commit_notify_due=True)  # to whoever still lacks the commit
            return
        if now_ms >= self._election_deadline_ms:
            if self._promotable():
                self._campaign(transfer=False)
            else:
                self._reset_election_timer()

    def propose(self, data: bytes, now_ms: int) -> tuple[int, int]:
        """Append a command at the leader. Returns (term, index) of its entry.

        The command is applied iff an entry with this exact (term, index) reaches
        `committed_entries`; another term at that index means it was lost. Raises
        ProposalDropped (not leader, transferring, too many uncommitted) or LimitExceeded.
        """
        self._enter(now_ms)
        self._check_can_propose()
        if len(data) > MAX_PROPOSAL_SIZE:
            raise LimitExceeded("MAX_PROPOSAL_SIZE", len(data), MAX_PROPOSAL_SIZE)
        index = self.log.last_index() + 1
        self._append_local([Entry(self.term, index, EntryKind.NORMAL, data)])
        return self.term, index

    def propose_batch(self, commands: list[bytes], now_ms: int) -> tuple[int, int]:
        """`propose` for many commands at once; returns (term, index of the first)."""
        self._enter(now_ms)
        self._check_can_propose()
        term = self.term
        first = self.log.last_index() + 1
        if not commands:
            return term, first
        entries = []
        for i, data in enumerate(commands):
            if len(data) > MAX_PROPOSAL_SIZE:
                raise LimitExceeded("MAX_PROPOSAL_SIZE", len(data), MAX_PROPOSAL_SIZE)
            entries.append(Entry(term, first + i, EntryKind.NORMAL, data))
        self._append_local(entries)
        return term, first

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise ProposalDropped("not_leader", self.leader_id)
        if self._transfer_target != NO_NODE:
            raise ProposalDropped("transferring", self.leader_id)
        if self.log.last_index() - self.log.committed >= MAX_UNCOMMITTED_ENTRIES:
            raise ProposalDropped("too_many_uncommitted", self.leader_id)

    def read_index(self, request_id: int, now_ms: int) -> None:
        """Ask for a linearizable read; the answer is a ReadState(request_id, ...) in a Ready.

        On the leader it is answered after a quorum heartbeat round; a follower forwards it to
        its leader (every read asked before the next `ready()` in one ReadIndexRequest: one index
        serves them all, as etcd's linearizable read loop does); with no known leader it fails at
        once (ok=False). `request_id` is the caller's, unique among this node's outstanding reads.
        """
        self._enter(now_ms)
        if self.role is Role.LEADER:
            self._leader_read(self.id, request_id)
        elif self.leader_id != NO_NODE and self._forwarded_read_count < MAX_PENDING_READS:
            # Forward (thesis §6.4); remembered so a leader change fails it at once.
            self._reads_to_forward.append(request_id)
            self._forwarded_read_count += 1
        else:
            self._read_states.append(ReadState(request_id, 0, False))

    def change_membership(self, membership: Membership, now_ms: int) -> int:
        """Propose a new configuration at the leader; returns the CONFIG entry's index.

        Allowed: any learner/address change plus at most one voter added or removed (a voter
        added must be caught up within max_learner_lag_entries). Refused (ProposalDropped) while
        the previous change is uncommitted or before this leader committed in its term.
        Raises ValueError for a malformed or multi-voter change.
        """
        self._enter(now_ms)
        membership.validate()
        self._check_can_propose()
        if self._pending_conf_index > self.log.committed:
            raise ProposalDropped("config_pending", self.leader_id)
        old = self.membership
        if len(old.voters ^ membership.voters) > 1:
            raise ValueError("one voter change at a time")
        if not membership.voters:
            raise ValueError("a configuration needs at least one voter")
        last = self.log.last_index()
        for added in membership.voters - old.voters:
            pr = self.progress.get(added)
            match = pr.match if pr is not None else 0
            # A learner that never acknowledged anything (match 0) is not "within the lag" of a
            # short log: it may not even be running. Promoted, it would be a voter that knows
            # no cluster (a write sent to it was answered "not initialized").
            if match == 0 or match + self._cfg.max_learner_lag_entries < last:
                raise ProposalDropped("learner_lagging", self.leader_id)
        index = last + 1
        self._append_local([Entry(self.term, index, EntryKind.CONFIG, encode_membership(membership))])
        return index

    def transfer_leadership(self, target: int, now_ms: int) -> None:
        """Hand leadership to voter `target` (thesis §3.10): catch it up, then send TimeoutNow.

        Proposals are refused until the transfer ends (target elected, or election_timeout_min_ms
        passed).
        """
        self._enter(now_ms)
        if self.role is not Role.LEADER:
            raise ProposalDropped("not_leader", self.leader_id)
        if target == self.id:
            return
        if target not in self.membership.voters:
            raise ProposalDropped("not_a_voter", self.leader_id)
        self._transfer_target = target
        self._transfer_deadline_ms = now_ms + self._cfg.election_timeout_min_ms
        if self.progress[target].match == self.log.last_index():
            self._msgs.append(TimeoutNow(self.id, target, self.term))
        else:
            self._flush_needed = True

    def campaign(self, now_ms: int) -> None:
        """Start an election now, as if the election timeout fired (openraft's trigger().elect()).

        A no-op for a leader or a node that is not a voter.
        """
        self._enter(now_ms)
        if self.role is not Role.LEADER and self._promotable():
            self._campaign(transfer=False)

    def request_snapshot(self, now_ms: int) -> None:
        """Ask for a snapshot at the applied index in the next Ready (on-demand snapshot)."""
        self._enter(now_ms)
        self._snapshot_requested = True

    def step(self, msg: RaftMessage, now_ms: int) -> None:
        """Handle one message from a peer. Garbage never raises: it is dropped."""
        self._enter(now_ms)
        if msg.to_id != self.id:
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self._in_lease():
                    return  # thesis §4.2.3: a live leader's followers ignore disruptive votes
                if msg.pre_vote:
                    self._handle_vote(msg)
                    return
            if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                pass  # a granted pre-vote echoes the future term; ours does not change
            else:
                leader = msg.from_id if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)) else NO_NODE
                # With pre-vote, a higher-term vote request comes only from a candidate a majority
                # found up to date, so the usual reset is harmless; without it, see _become_follower.
                keep_timer = isinstance(msg, RequestVote) and not self._cfg.pre_vote
                self._become_follower(msg.term, leader, keep_election_timer=keep_timer)
        elif msg.term < self.term:
            if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
                # A stale leader (maybe cut off while we moved on through pre-vote) must learn
                # the new term, or it would never step down (etcd raft.go, "checkQuorum").
                self._msgs.append(AppendEntriesResponse(self.id, msg.from_id, self.term, 0, True))
            elif isinstance(msg, RequestVote):
                # Raft Fig. 2: reply with our term. A candidate whose requests only reach nodes
                # at higher terms (its config differs from theirs) must learn the term, or it
                # could campaign below it forever (found by sim seed 450, pre-vote off).
                self._msgs.append(RequestVoteResponse(self.id, msg.from_id, self.term, False, msg.pre_vote))
            return
        if isinstance(msg, RequestVote):
            self._handle_vote(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    # ------------------------------------------------------------------ outputs

    def ready(self) -> Ready | None:
        """Everything to persist, send and apply now, or None if there is nothing.

        Must be followed by `advance(ready)` before any other call.
        """
        if self._outstanding is not None:
            raise UsageError("ready() called twice without advance()")
        log = self.log
        if self.role is Role.LEADER:
            if self._reads.may_start_round:
                self._broadcast_heartbeat(read_round=True)
            if self._flush_needed:
                self._flush_appends()
        elif self._reads_to_forward:
            self._send_forwarded_reads()
        rd = Ready()
        has = False
        soft = self._prev_soft
        if soft.leader_id != self.leader_id or soft.role is not self.role:
            rd.soft_state = SoftState(self.leader_id, self.role)
            has = True
        snap = log.pending_snapshot()
        if snap is not None:
            rd.snapshot = snap
            has = True
        unstable = log.unstable_entries()
        if unstable:
            rd.entries = list(unstable)
            has = True
        prev = self._prev_hs
        if prev.term != self.term or prev.vote != self.vote or prev.commit != log.committed:
            rd.hard_state = HardState(self.term, self.vote, log.committed)
            has = True
        rd.must_sync = bool(unstable) or snap is not None or prev.term != self.term or prev.vote != self.vote
        if self._msgs:
            rd.messages = self._msgs
            self._msgs = []
            has = True
        if log.committed > log.applied:
            rd.committed_entries = log.next_committed_entries(self._cfg.max_apply_size_bytes)
            has = True
        if self._read_states:
            rd.read_states = self._read_states
            self._read_states = []
            has = True
        after_applied = rd.committed_entries[-1].index if rd.committed_entries else log.applied
        interval = self._cfg.snapshot_interval_entries
        if after_applied > self._last_snapshot_index and (
            self._snapshot_requested or (interval > 0 and after_applied - self._last_snapshot_index >= interval)
        ):
            term = log.term(after_applied)
            assert term is not None
            rd.snapshot_to_take = SnapshotMeta(after_applied, term, self.membership_at(after_applied))
            rd.compact_to_index = max(0, after_applied - self._cfg.snapshot_keep_entries)
            has = True
        if not has:
            return None
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The worker persisted, sent and applied `rd` (in that order)."""
        if rd is not self._outstanding:
            raise UsageError("advance() with a Ready that is not the outstanding one")
        log = self.log
        if rd.snapshot is not None:
            log.stable_snapshot()
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.snapshot_to_take is not None:
            index = rd.snapshot_to_take.index
            self._last_snapshot_index = index
            self._snapshot_requested = False
            # Keep the config in force at the compaction point and everything after it.
            keep_from = rd.compact_to_index
            configs = self._configs
            while len(configs) > 1 and configs[1][0] <= keep_from:
                configs.pop(0)
        self._outstanding = None

    # ------------------------------------------------------------------ roles

    def _promotable(self) -> bool:
        return self.id in self.membership.voters

    def _in_lease(self) -> bool:
        if not self._cfg.check_quorum or self.leader_id == NO_NODE:
            return False
        if self.role is Role.LEADER:
            return True
        return self._now_ms < self._leader_contact_ms + self._cfg.election_timeout_min_ms

    def _reset_election_timer(self) -> None:
        cfg = self._cfg
        self._election_deadline_ms = self._now_ms + self._rng.randrange(
            cfg.election_timeout_min_ms, cfg.election_timeout_max_ms
        )

    def _fail_forwarded_reads(self) -> None:
        """The leader we forwarded reads to is gone: answer them now (not ok) so callers retry
        instead of waiting for their timeout."""
        for _, request_ids in self._forwarded_reads.values():
            self._read_states.extend(ReadState(rid, 0, False) for rid in request_ids)
        self._read_states.extend(ReadState(rid, 0, False) for rid in self._reads_to_forward)
        self._forwarded_reads.clear()
        self._reads_to_forward = []
        self._forwarded_read_count = 0

    def _send_forwarded_reads(self) -> None:
        """The reads asked since the last Ready, as one ReadIndexRequest to the leader."""
        if self.role is not Role.FOLLOWER or self.leader_id == NO_NODE:
            self._fail_forwarded_reads()  # not reached: a leader change fails them first
            return
        ctx = self._next_read_ctx
        self._next_read_ctx += 1
        self._forwarded_reads[ctx] = (self.leader_id, self._reads_to_forward)
        self._reads_to_forward = []
        self._msgs.append(ReadIndexRequest(self.id, self.leader_id, self.term, ctx))

    def _become_follower(self, term: int, leader_id: int, *, keep_election_timer: bool = False) -> None:
        """Step down to follower at `term`. `keep_election_timer`: the step-down comes from a vote
        request, which resets the timer only if granted (thesis Fig. 3.1: the timer restarts on
        hearing the leader or granting a vote). Without pre-vote, resetting it on every higher-term
        request lets a candidate with a stale log, retrying forever, keep the only electable node
        from ever timing out (a livelock the simulator found, seed 7980 with pre_vote off)."""
        if self._forwarded_read_count and leader_id != self.leader_id:
            self._fail_forwarded_reads()
        was_leader = self.role is Role.LEADER
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        if leader_id != NO_NODE:
            self._leader_contact_ms = self._now_ms
        if not keep_election_timer or was_leader or self._election_deadline_ms <= self._now_ms:
            self._reset_election_timer()
        self._votes = {}
        if was_leader:
            self.progress = {}
            self._transfer_target = NO_NODE
            self._flush_needed = False
            for origin, rid in self._reads.drain():
                self._answer_read(origin, rid, 0, False)
            self._reads = ReadOnly()

    def _campaign(self, *, transfer: bool, pre_vote_won: bool = False) -> None:
        # After a won pre-vote the real election follows (thesis §9.6); it must not pre-vote again.
        pre = self._cfg.pre_vote and not transfer and not pre_vote_won
        if pre:
            self.role = Role.PRE_CANDIDATE
            vote_term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            vote_term = self.term
        self.leader_id = NO_NODE
        self._fail_forwarded_reads()
        self._reset_election_timer()
        self._votes = {self.id: True}
        if self._won_election():
            if pre:
                self._campaign(transfer=False, pre_vote_won=True)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for voter in sorted(self.membership.voters):
            if voter != self.id:
                self._msgs.append(RequestVote(self.id, voter, vote_term, last_index, last_term, pre, transfer))

    def _won_election(self) -> bool:
        voters = self.membership.voters
        granted = sum(1 for n, ok in self._votes.items() if ok and n in voters)
        return granted >= len(voters) // 2 + 1

    def _lost_election(self) -> bool:
        voters = self.membership.voters
        rejected = sum(1 for n, ok in self._votes.items() if not ok and n in voters)
        return rejected >= len(voters) // 2 + 1

    def _become_leader(self) -> None:
        logger.info("node=%d became leader term=%d", self.id, self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        self._votes = {}
        self._reads = ReadOnly()
        self._transfer_target = NO_NODE
        self.progress = {}
        self._sync_progress()
        for pr in self.progress.values():
            pr.recent_active = True
        now = self._now_ms
        self._heartbeat_deadline_ms = now + self._cfg.heartbeat_interval_ms
        self._check_quorum_deadline_ms = now + self._cfg.election_timeout_min_ms
        self._commit_notify_deadline_ms = -1
        # Raft §8: commit a no-op of this term; config changes and reads wait for it.
        index = self.log.last_index() + 1
        self._pending_conf_index = index
        self._append_local([Entry(self.term, index, EntryKind.NOOP, b"")])

    def _sync_progress(self) -> None:
        """Make `progress` cover exactly the current members (leader only)."""
        m = self.membership
        members = m.voters | m.learners
        next_index = self.log.last_index() + 1
        for node in members:
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(next_index, is_learner=node in m.learners)
                if node == self.id:
                    pr.match = next_index - 1
                    pr.become_replicate()
                self.progress[node] = pr
            else:
                pr.is_learner = node in m.learners
        config_pending = self._pending_conf_index > self.log.committed
        for node in [n for n in self.progress if n not in members]:
            if config_pending and node != self.id:
                # Keep replicating to a node being removed until its removal commits, so it
                # learns of it (else it would campaign with a stale config forever).
                self.progress[node].is_learner = True
            else:
                del self.progress[node]
        if self.id not in self.progress:
            # A leader removing itself keeps replicating until the change commits (thesis §4.2.2).
            pr = Progress(next_index, is_learner=True)
            pr.match = next_index - 1
            pr.become_replicate()
            self.progress[self.id] = pr
        if self._transfer_target not in m.voters:
            self._transfer_target = NO_NODE

    # ------------------------------------------------------------------ log helpers

    def _append_local(self, entries: list[Entry]) -> None:
        """Leader appends its own entries (config entries take effect at once)."""
        self.log.append(entries)
        last = entries[-1].index
        me = self.progress.get(self.id)
        if me is not None:
            me.match = last
            me.next = last + 1
        changed = False
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                self._configs.append((e.index, decode_membership(e.data)))
                self._pending_conf_index = e.index
                changed = True
        if changed:
            self._on_membership_changed()
        self._maybe_commit()
        self._flush_needed = True

    def _on_membership_changed(self) -> None:
        self.membership = self._configs[-1][1]
        if self.role is Role.LEADER:
            self._sync_progress()
        elif self.role is not Role.FOLLOWER and not self._promotable():
            self._become_follower(self.term, NO_NODE)

    def _follower_appended(self, conflict_index: int, appended: list[Entry]) -> None:
        """Track CONFIG entries a follower appended from `conflict_index` (truncation reverts)."""
        configs = self._configs
        changed = False
        while len(configs) > 1 and configs[-1][0] >= conflict_index:
            configs.pop()
            changed = True
        for e in appended:
            if e.kind is EntryKind.CONFIG:
                configs.append((e.index, decode_membership(e.data)))
                changed = True
        if changed:
            self._on_membership_changed()

    def _maybe_commit(self) -> bool:
        """Leader: advance commit to the quorum-acknowledged index, if of this term (§5.4.2)."""
        voters = self.membership.voters
        progress = self.progress
        matches = sorted((progress[v].match for v in voters if v in progress), reverse=True)
        quorum = len(voters) // 2 + 1
        if len(matches) < quorum:
            return False
        index = matches[quorum - 1]
        log = self.log
        if index <= log.committed or log.term(index) != self.term:
            return False
        was_committed_in_term = log.term(log.committed) == self.term
        config_was_pending = self._pending_conf_index > log.committed
        log.commit_to(index)
        if config_was_pending and log.committed >= self._pending_conf_index:
            self._sync_progress()  # drop the progress of nodes whose removal just committed
        self._flush_needed = True
        if not was_committed_in_term:
            for origin, rid in self._reads.take_waiting_for_commit():
                self._leader_read(origin, rid)
        if self.id not in voters and log.committed >= self._pending_conf_index:
            # Our removal is committed: stop leading (thesis §4.2.2).
            self._flush_appends()
            self._become_follower(self.term, NO_NODE)
        return True

    # ------------------------------------------------------------------ votes

    def _handle_vote(self, msg: RequestVote) -> None:
        can_vote = (
            self.vote == msg.from_id
            or (self.vote == NO_NODE and self.leader_id == NO_NODE)
            or (msg.pre_vote and msg.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(msg.last_index, msg.last_term):
            self._msgs.append(RequestVoteResponse(self.id, msg.from_id, msg.term, True, msg.pre_vote))
            if not msg.pre_vote:
                self.vote = msg.from_id
                self._reset_election_timer()
        else:
            self._msgs.append(RequestVoteResponse(self.id, msg.from_id, self.term, False, msg.pre_vote))

    def _step_candidate(self, msg: RaftMessage) -> None:
        if isinstance(msg, RequestVoteResponse):
            pre = self.role is Role.PRE_CANDIDATE
            if msg.pre_vote != pre:
                return
            self._votes[msg.from_id] = msg.granted
            if self._won_election():
                if pre:
                    self._campaign(transfer=False, pre_vote_won=True)
                else:
                    self._become_leader()
            elif self._lost_election():
                self._become_follower(self.term, NO_NODE)
        elif isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._become_follower(self.term, msg.from_id)
            self._step_follower(msg)
        elif isinstance(msg, ReadIndexRequest):
            self._msgs.append(ReadIndexResponse(self.id, msg.from_id, self.term, msg.request_id, 0, False))

    # ------------------------------------------------------------------ follower

    def _heard_from_leader(self, leader_id: int) -> None:
        if self._forwarded_read_count and leader_id != self.leader_id:
            self._fail_forwarded_reads()
        self.leader_id = leader_id
        self._leader_contact_ms = self._now_ms
        self._reset_election_timer()

    def _step_follower(self, msg: RaftMessage) -> None:
        if isinstance(msg, AppendEntries):
            self._heard_from_leader(msg.from_id)
            self._handle_append(msg)
        elif isinstance(msg, Heartbeat):
            self._heard_from_leader(msg.from_id)
            last = self.log.last_index()
            if msg.commit > last:
                # The leader believes we hold entries we do not: our disk lost acknowledged
                # entries. Say so, or the leader would never resend them.
                self._msgs.append(HeartbeatResponse(self.id, msg.from_id, self.term, msg.read_ctx, True, last))
                return
            self.log.commit_to(msg.commit)
            self._msgs.append(HeartbeatResponse(self.id, msg.from_id, self.term, msg.read_ctx))
        elif isinstance(msg, InstallSnapshot):
            self._heard_from_leader(msg.from_id)
            self._handle_snapshot_chunk(msg)
        elif isinstance(msg, TimeoutNow):
            if self._promotable():
                logger.info("node=%d campaigning on TimeoutNow term=%d", self.id, self.term)
                self._campaign(transfer=True)
        elif isinstance(msg, ReadIndexResponse):
            forwarded = self._forwarded_reads.pop(msg.request_id, None)
            if forwarded is not None:
                _, request_ids = forwarded
                self._forwarded_read_count -= len(request_ids)
                self._read_states.extend(ReadState(rid, msg.index, msg.ok) for rid in request_ids)
        elif isinstance(msg, ReadIndexRequest):
            self._msgs.append(ReadIndexResponse(self.id, msg.from_id, self.term, msg.request_id, 0, False))

    def _handle_append(self, msg: AppendEntries) -> None:
        log = self.log
        if msg.prev_index < log.committed:
            # Duplicate or reordered: everything up to our commit already matches (etcd).
            self._msgs.append(AppendEntriesResponse(self.id, msg.from_id, self.term, log.committed))
            return
        entries = msg.entries
        if entries and not self._entries_well_formed(msg):
            logger.warning("node=%d dropped malformed AppendEntries from %d", self.id, msg.from_id)
            self.malformed_messages += 1
            return
        if not log.match_term(msg.prev_index, msg.prev_term):
            hint_index = min(msg.prev_index, log.last_index())
            hint_index, hint_term = log.find_conflict_by_term(hint_index, msg.prev_term)
            self._msgs.append(
                AppendEntriesResponse(self.id, msg.from_id, self.term, msg.prev_index, True, hint_index, hint_term)
            )
            return
        last_new = msg.prev_index + len(entries)
        if entries:
            if msg.prev_index == log.last_index():
                conflict = entries[0].index  # fast path: plain append at the end
            else:
                conflict = log.find_conflict(entries)
            if conflict:
                appended = entries[conflict - msg.prev_index - 1 :]
                log.append(appended)
                self._follower_appended(conflict, appended)
        log.commit_to(min(msg.leader_commit, last_new))
        self._msgs.append(AppendEntriesResponse(self.id, msg.from_id, self.term, last_new))

    @staticmethod
    def _entries_well_formed(msg: AppendEntries) -> bool:
        """Remote garbage must not reach the log (STYLE §15): contiguous indexes after prev,
        terms within the sender's, and CONFIG entries that decode to a valid Membership."""
        entries = msg.entries
        first, last = entries[0], entries[-1]
        if first.index != msg.prev_index + 1 or last.index != msg.prev_index + len(entries):
            return False
        if first.term < msg.prev_term or last.term > msg.term:
            return False
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                try:
                    decode_membership(e.data).validate()
                except (msgspec.DecodeError, ValueError):
                    return False
        return True

    def _handle_snapshot_chunk(self, msg: InstallSnapshot) -> None:
        meta = msg.meta
        log = self.log

        def respond(next_offset: int, done: bool) -> None:
            self._msgs.append(
                InstallSnapshotResponse(self.id, msg.from_id, self.term, meta.index, meta.term, next_offset, done)
            )

        if meta.index <= log.committed:
            self._recv_snapshot_meta = None
            respond(msg.offset + len(msg.data), True)  # we already have all of it
            return
        buf = self._recv_snapshot_buf
        if msg.offset == 0:
            self._recv_snapshot_meta = meta
            buf = self._recv_snapshot_buf = bytearray()
        elif self._recv_snapshot_meta != meta or msg.offset != len(buf):
            # Resume point for the leader: where our copy ends (or 0: start over cleanly).
            respond(len(buf) if self._recv_snapshot_meta == meta else 0, False)
            return
        if len(buf) + len(msg.data) > MAX_SNAPSHOT_SIZE:
            logger.warning("node=%d snapshot over MAX_SNAPSHOT_SIZE dropped", self.id)
            self._recv_snapshot_meta = None
            self._recv_snapshot_buf = bytearray()
            return
        buf += msg.data
        if not msg.done:
            respond(len(buf), False)
            return
        snapshot = Snapshot(meta, bytes(buf))
        self._recv_snapshot_meta = None
        self._recv_snapshot_buf = bytearray()
        if log.match_term(meta.index, meta.term):
            log.commit_to(meta.index)  # we hold that entry: just fast-forward (etcd restore)
        else:
            logger.info("node=%d installing snapshot index=%d term=%d", self.id, meta.index, meta.term)
            log.restore(snapshot)
            self._configs = [(meta.index, meta.membership)]
            self._last_snapshot_index = meta.index
            self._on_membership_changed()
        respond(len(snapshot.data), True)


__all__ = ["RaftCore", "MAX_PROPOSAL_SIZE", "MAX_UNCOMMITTED_ENTRIES", "MAX_SNAPSHOT_SIZE"]
