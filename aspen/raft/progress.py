"""Progress: the leader's view of one follower's log (etcd `tracker/progress.go`).

States (etcd's flow control):

- PROBE: we don't know where the follower's log matches; send one AppendEntries at a time and
  wait for the answer (or the next heartbeat response) before sending again.
- REPLICATE: the follower matches up to `match`; stream AppendEntries optimistically, at most
  `max_inflight_appends` unacknowledged at once (pipelining with a bound).
- SNAPSHOT: the follower needs entries we compacted; send the snapshot in chunks, one chunk in
  flight, resuming from the offset the follower acknowledged.
"""

from __future__ import annotations

import enum
from collections import deque

from aspen.raft.types import Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    """Replication state of one peer, kept by the leader only."""

    __slots__ = (
        "match", "next", "state", "paused", "inflights", "recent_active", "is_learner",
        "read_ack", "sent_commit", "match_at_last_hb", "snapshot", "snapshot_offset",
        "snapshot_sent_ms",
    )

    def __init__(self, next_index: int, *, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # PROBE: an append is outstanding
        self.inflights: deque[int] = deque()  # REPLICATE: last index of each unacked append
        self.recent_active = False  # heard from since the last check-quorum round
        self.is_learner = is_learner
        self.read_ack = 0  # highest ReadIndex round (read_ctx) this peer echoed
        self.sent_commit = 0  # highest commit index we told this peer
        self.match_at_last_hb = -1  # `match` at the previous heartbeat response (loss detection)
        self.snapshot: Snapshot | None = None  # SNAPSHOT: what we are sending
        self.snapshot_offset = 0  # SNAPSHOT: bytes the follower acknowledged
        self.snapshot_sent_ms = 0  # SNAPSHOT: when we last sent a chunk

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT and self.snapshot is not None:
            self.next = max(self.match + 1, self.snapshot.meta.index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.paused = False
        self.inflights.clear()
        self.snapshot = None
        self.snapshot_offset = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.inflights.clear()
        self.snapshot = None

    def become_snapshot(self, snapshot: Snapshot, now_ms: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.inflights.clear()
        self.paused = False
        self.snapshot = snapshot
        self.snapshot_offset = 0
        self.snapshot_sent_ms = now_ms

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged entries up to `index`. True if `match` moved."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.paused = False
        if index + 1 > self.next:
            self.next = index + 1
        infl = self.inflights
        while infl and infl[0] <= index:
            infl.popleft()
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at prev index `rejected`. False if the reject is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            self.next = max(min(rejected, match_hint + 1), self.match + 1)
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.paused = False
        return True


__all__ = ["Progress", "ProgressState"]
