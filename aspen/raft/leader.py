"""Leader-side half of RaftCore: replication, heartbeats, snapshots to send, ReadIndex.

Rules: this is a mixin of `RaftCore` only (split out to keep modules small, STYLE §1); it owns
no state of its own. It sends AppendEntries within flow control (etcd `tracker/progress.go`:
PROBE one at a time, REPLICATE pipelined up to max_inflight_appends, SNAPSHOT one chunk in
flight; with hold_partial_appends, a tail short of a full append waits for the acknowledgement
of the one in flight), detects lost appends by a heartbeat round without progress, and answers reads after a
quorum heartbeat round (thesis §6.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    TimeoutNow,
)
from aspen.raft.progress import Progress, ProgressState
from aspen.raft.ready import ReadState, Role

if TYPE_CHECKING:
    import logging

    from aspen.raft.config import RaftConfig
    from aspen.raft.raft_log import RaftLog
    from aspen.raft.read_only import ReadOnly
    from aspen.raft.types import Membership, RaftStorage


class LeaderMixin:
    """The leader's handlers; RaftCore's state is declared here for the type checker."""

    id: int
    term: int
    role: Role
    membership: Membership
    progress: dict[int, Progress]
    log: RaftLog
    _cfg: RaftConfig
    _storage: RaftStorage
    _msgs: list[RaftMessage]
    _read_states: list[ReadState]
    _reads: ReadOnly
    _now_ms: int
    _flush_needed: bool
    _commit_notify_deadline_ms: int
    _transfer_target: int
    _log: logging.Logger

    if TYPE_CHECKING:

        def _maybe_commit(self) -> bool: ...

    # ------------------------------------------------------------------ leader

    def _step_leader(self, msg: RaftMessage) -> None:
        if isinstance(msg, AppendEntriesResponse):
            self._handle_append_response(msg)
        elif isinstance(msg, HeartbeatResponse):
            self._handle_heartbeat_response(msg)
        elif isinstance(msg, InstallSnapshotResponse):
            self._handle_snapshot_response(msg)
        elif isinstance(msg, ReadIndexRequest):
            if msg.from_id in self.progress:
                self._leader_read(msg.from_id, msg.request_id)

    def _handle_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self.progress.get(msg.from_id)
        if pr is None:
            return
        pr.recent_active = True
        if msg.reject:
            match_hint = msg.hint_index
            if msg.hint_term > 0:
                match_hint, _ = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)
            if pr.maybe_decr_to(msg.index, match_hint):
                self._flush_needed = True
            return
        if pr.maybe_update(msg.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.snapshot is not None and pr.match >= pr.snapshot.meta.index:
                pr.become_probe()
            self._maybe_commit()
            if self.role is not Role.LEADER:
                return
            if msg.from_id == self._transfer_target and pr.match == self.log.last_index():
                self._msgs.append(TimeoutNow(self.id, msg.from_id, self.term))
        if pr.next <= self.log.last_index() or pr.sent_commit < self.log.committed:
            self._flush_needed = True

    def _handle_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        pr = self.progress.get(msg.from_id)
        if pr is None:
            return
        pr.recent_active = True
        if msg.read_ctx > pr.read_ack:
            pr.read_ack = msg.read_ctx
            self._release_reads()
        if msg.lost_log and msg.last_index < pr.match:
            # Outside Raft's model (a voter lost its disk): restart replication from what it has.
            self._log.warning("node=%d peer=%d lost acknowledged entries (match %d, has %d)",
                           self.id, msg.from_id, pr.match, msg.last_index)
            pr.match = msg.last_index
            pr.become_probe()
            self._flush_needed = True
            return
        last = self.log.last_index()
        if pr.state is ProgressState.PROBE:
            pr.paused = False
        elif pr.state is ProgressState.REPLICATE and pr.match < last and pr.match == pr.match_at_last_hb:
            # No progress for a heartbeat interval although entries are outstanding: an append
            # was lost (the network drops); fall back to probing from `match` (retransmit).
            pr.become_probe()
        pr.match_at_last_hb = pr.match
        if pr.match < last or pr.sent_commit < self.log.committed:
            self._flush_needed = True

    def _handle_snapshot_response(self, msg: InstallSnapshotResponse) -> None:
        pr = self.progress.get(msg.from_id)
        if pr is None:
            return
        pr.recent_active = True
        snap = pr.snapshot
        if msg.done:
            if msg.meta_index > pr.match:
                pr.match = msg.meta_index
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
            pr.next = max(pr.next, pr.match + 1)
            self._maybe_commit()
            self._flush_needed = True
            return
        if pr.state is not ProgressState.SNAPSHOT or snap is None or snap.meta.index != msg.meta_index:
            return
        offset = min(msg.next_offset, len(snap.data))
        # One chunk in flight: only a response that moves us forward (or a restart from 0 by a
        # follower that lost its partial copy) triggers the next chunk; duplicates and stale
        # answers would otherwise fork parallel streams. Lost chunks are resent by the
        # heartbeat timer from the acknowledged offset.
        if offset > pr.snapshot_offset or (offset == 0 and pr.snapshot_offset != 0):
            pr.snapshot_offset = offset
            self._send_snapshot_chunk(msg.from_id, pr)

    def _broadcast_heartbeat(self, *, read_round: bool = False) -> None:
        ctx = self._reads.start_round() if read_round else self._reads.seq
        me = self.progress.get(self.id)
        if me is not None:
            me.read_ack = ctx
        committed = self.log.committed
        now = self._now_ms
        for node, pr in self.progress.items():
            if node == self.id:
                continue
            self._msgs.append(Heartbeat(self.id, node, self.term, min(pr.match, committed), ctx))
            if (
                pr.state is ProgressState.SNAPSHOT
                and not read_round
                and now - pr.snapshot_sent_ms >= self._cfg.heartbeat_interval_ms
            ):
                self._send_snapshot_chunk(node, pr)  # resume a transfer whose chunk was lost
        if read_round:
            self._release_reads()

    def _quorum_active(self) -> bool:
        voters = self.membership.voters
        active = 0
        for node, pr in self.progress.items():
            if node in voters and (node == self.id or pr.recent_active):
                active += 1
            pr.recent_active = False
        return active >= len(voters) // 2 + 1

    def _flush_appends(self, *, commit_notify_due: bool = False) -> None:
        """Send what each follower is missing, within flow control (batched, pipelined).
        `commit_notify_due`: the deferred commit-only appends go now (see commit_notify_delay_ms)."""
        self._flush_needed = False
        for node, pr in self.progress.items():
            if node != self.id:
                self._send_appends(node, pr, commit_notify_due)

    def new_entries_would_wait(self) -> bool:
        """Leader: every other voter has an append in flight, so (hold_partial_appends) an entry
        proposed now, short of a full append, would be sent to nobody before an acknowledgement
        arrives. The worker then holds client writes until that acknowledgement instead of
        proposing and syncing each on its own."""
        if not self._cfg.hold_partial_appends:
            return False
        voters = self.membership.voters
        others = False
        for node, pr in self.progress.items():
            if node == self.id or node not in voters:
                continue
            if pr.state is not ProgressState.REPLICATE or not pr.inflights:
                return False
            others = True
        return others

    def _send_appends(self, to: int, pr: Progress, commit_notify_due: bool = False) -> None:
        log = self.log
        cfg = self._cfg
        last = log.last_index()
        committed = log.committed
        state = pr.state
        if state is ProgressState.SNAPSHOT:
            return
        if state is ProgressState.PROBE:
            if pr.paused:
                return
            self._send_one_append(to, pr, last, committed)
            pr.paused = True
            return
        sent = False
        max_inflight = cfg.max_inflight_appends
        while pr.next <= last and len(pr.inflights) < max_inflight:
            only_full = cfg.hold_partial_appends and len(pr.inflights) > 0
            if not self._send_one_append(to, pr, last, committed, only_full=only_full):
                # A snapshot went instead, or a partial tail is held: the acknowledgement of the
                # append in flight sends it, with the commit index of that moment.
                return
            sent = True
        if not sent and pr.sent_commit < committed:
            delay = min(cfg.commit_notify_delay_ms, cfg.heartbeat_interval_ms)
            if delay == 0 or commit_notify_due:
                self._send_one_append(to, pr, last, committed)
            elif self._commit_notify_deadline_ms < 0:
                # Deferred: the next append or heartbeat will likely carry it first.
                self._commit_notify_deadline_ms = self._now_ms + delay

    def _send_one_append(self, to: int, pr: Progress, last: int, committed: int, *, only_full: bool = False) -> bool:
        """One AppendEntries from pr.next (empty if nothing new). False if a snapshot went instead,
        or (`only_full`) nothing was sent because the entries would not fill a whole append."""
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            self._start_snapshot(to, pr)
            return False
        if pr.next <= last:
            cfg = self._cfg
            entries = log.entries(pr.next, min(last + 1, pr.next + cfg.max_entries_per_append), cfg.max_append_size_bytes)
            # Full: the count limit, or the size limit cut the batch short of `last`.
            if only_full and len(entries) < cfg.max_entries_per_append and entries[-1].index == last:
                return False
        else:
            entries = []
        self._msgs.append(AppendEntries(self.id, to, self.term, prev, prev_term, entries, committed))
        pr.sent_commit = committed
        if entries:
            end = entries[-1].index
            if pr.state is ProgressState.REPLICATE:
                pr.next = end + 1
                pr.inflights.append(end)
        return True

    def _start_snapshot(self, to: int, pr: Progress) -> None:
        snapshot = self._storage.snapshot()
        self._log.info("node=%d sending snapshot index=%d to=%d", self.id, snapshot.meta.index, to)
        pr.become_snapshot(snapshot, self._now_ms)
        self._send_snapshot_chunk(to, pr)

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        snap = pr.snapshot
        assert snap is not None
        offset = pr.snapshot_offset
        data = snap.data[offset : offset + self._cfg.snapshot_chunk_size_bytes]
        done = offset + len(data) >= len(snap.data)
        self._msgs.append(InstallSnapshot(self.id, to, self.term, snap.meta, offset, data, done))
        pr.snapshot_sent_ms = self._now_ms

    # ------------------------------------------------------------------ reads

    def _leader_read(self, origin: int, request_id: int) -> None:
        log = self.log
        if self._reads.is_full():
            self._answer_read(origin, request_id, 0, False)
        elif log.term(log.committed) != self.term:
            self._reads.wait_for_commit(origin, request_id)  # thesis §6.4 step 1
        elif self.membership.voters == {self.id}:
            self._answer_read(origin, request_id, log.committed, True)
        else:
            self._reads.add(log.committed, origin, request_id)

    def _release_reads(self) -> None:
        voters = self.membership.voters
        acks = sorted((pr.read_ack for n, pr in self.progress.items() if n in voters), reverse=True)
        quorum = len(voters) // 2 + 1
        if len(acks) < quorum:
            return
        for index, origin, rid in self._reads.release(acks[quorum - 1]):
            self._answer_read(origin, rid, index, True)

    def _answer_read(self, origin: int, request_id: int, index: int, ok: bool) -> None:
        if origin == self.id:
            self._read_states.append(ReadState(request_id, index, ok))
        else:
            self._msgs.append(ReadIndexResponse(self.id, origin, self.term, request_id, index, ok))


__all__ = ["LeaderMixin"]
