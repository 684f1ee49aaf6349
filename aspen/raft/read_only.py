"""ReadIndex bookkeeping for the leader (Raft thesis §6.4; etcd `read_only.go`).

A linearizable read is answered with an index: the leader's commit index when the read arrived,
released only after a quorum of voters acknowledged a heartbeat round (`read_ctx`) that was sent
*after* the read arrived, proving this node was still the leader at that moment. Reads that
arrive before the leader committed an entry of its own term wait for that first (thesis §6.4
step 1: until then the leader's commit index may be stale).

Rounds: `next_seq()` is the round a new read joins; `start_round()` is called when that round's
heartbeats are sent; a voter's echo of round r confirms all reads with seq <= r.
"""

from __future__ import annotations

from collections import deque

# Pending reads per leader (both waiting for a quorum round and for the first commit of the
# term). Beyond this, new reads are refused so a stalled leader cannot grow without bound; a
# client retries. guess: revisit (a few rounds of a busy node's read traffic).
MAX_PENDING_READS = 10_000
# Heartbeat rounds for reads that may be unconfirmed at once. Reads arriving while a round is
# out join the next one, sent when it returns: under load one round (2 heartbeats and their
# answers in a 3-node cluster) confirms every read of a round trip, as etcd's
# linearizableReadLoop does with one ReadIndex at a time; a lone read still goes at once.
MAX_READ_ROUNDS_IN_FLIGHT = 1


class ReadOnly:
    """Pending ReadIndex requests of one leader term. `origin` is the node that asked."""

    __slots__ = ("seq", "acked", "round_needed", "_pending", "_waiting_commit")

    def __init__(self) -> None:
        self.seq = 0  # last round whose heartbeats were sent
        self.acked = 0  # last round a quorum echoed
        self.round_needed = False  # reads joined round seq+1 that was not sent yet
        self._pending: deque[tuple[int, int, int, int]] = deque()  # (seq, index, origin, id)
        self._waiting_commit: list[tuple[int, int]] = []  # (origin, id)

    def __len__(self) -> int:
        return len(self._pending) + len(self._waiting_commit)

    def is_full(self) -> bool:
        return len(self) >= MAX_PENDING_READS

    def wait_for_commit(self, origin: int, request_id: int) -> None:
        self._waiting_commit.append((origin, request_id))

    def take_waiting_for_commit(self) -> list[tuple[int, int]]:
        out, self._waiting_commit = self._waiting_commit, []
        return out

    def add(self, index: int, origin: int, request_id: int) -> None:
        """Queue a read at commit index `index`; it joins the next heartbeat round."""
        self._pending.append((self.seq + 1, index, origin, request_id))
        self.round_needed = True

    @property
    def may_start_round(self) -> bool:
        """Reads wait for a round and fewer than MAX_READ_ROUNDS_IN_FLIGHT are unconfirmed."""
        return self.round_needed and self.seq - self.acked < MAX_READ_ROUNDS_IN_FLIGHT

    def start_round(self) -> int:
        """Heartbeats for the next round are being sent now: returns its read_ctx."""
        self.seq += 1
        self.round_needed = False
        return self.seq

    def release(self, acked_seq: int) -> list[tuple[int, int, int]]:
        """Reads confirmed by a quorum echo of round `acked_seq`: (index, origin, request_id)."""
        out: list[tuple[int, int, int]] = []
        if acked_seq > self.acked:
            self.acked = min(acked_seq, self.seq)
        pending = self._pending
        while pending and pending[0][0] <= acked_seq:
            _, index, origin, request_id = pending.popleft()
            out.append((index, origin, request_id))
        return out

    def drain(self) -> list[tuple[int, int]]:
        """Everything still pending (the leader stepped down): (origin, request_id)."""
        out = [(origin, rid) for _, _, origin, rid in self._pending] + self._waiting_commit
        self._pending.clear()
        self._waiting_commit = []
        self.round_needed = False
        return out


__all__ = ["ReadOnly", "MAX_PENDING_READS", "MAX_READ_ROUNDS_IN_FLIGHT"]
