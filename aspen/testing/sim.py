"""Deterministic simulation building blocks: virtual time and a seeded, hostile network.

Rules:

- Everything random comes from one `random.Random(seed)` owned by the caller, so a run is a
  pure function of its seed: a failure prints the seed and `--seed N` replays it exactly.
- Time is virtual (integer ms); nothing sleeps. The network is a heap of in-flight messages
  ordered by delivery time (ties broken by send order, so reordering comes only from delays).
- Faults (iroh-gossip's `proto/sim.rs`, etcd's `rafttest` network, the Rust Aspen's
  FailureInjector): per-message drop, duplicate and delay (uniform in [min, max] ms, so
  messages overtake each other); symmetric partitions (groups that cannot talk) and asymmetric
  ones (a one-way blocked link); all checked both at send and at delivery time.

`aspen.testing.raft_sim` builds the Raft cluster simulator on top; plugins (gossip) can reuse
`SimNetwork` for their own protocols.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Generic, TypeVar

M = TypeVar("M")

# In-flight messages before the network drops new ones (a real link's buffer is bounded too).
# guess: far above what a 5-node simulation keeps in flight.
MAX_IN_FLIGHT_MESSAGES = 100_000


@dataclass
class NetworkFaults:
    """Fault rates of the network; mutable during a run (a test may heal the network)."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    min_delay_ms: int = 1
    max_delay_ms: int = 5


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    blocked: int = 0


@dataclass(order=True)
class _InFlight(Generic[M]):
    deliver_at_ms: int
    seq: int
    src: int = field(compare=False)
    dst: int = field(compare=False)
    message: M = field(compare=False)


class SimNetwork(Generic[M]):
    """A seeded lossy network between integer node ids."""

    def __init__(self, rng: random.Random, faults: NetworkFaults | None = None) -> None:
        self._rng = rng
        self.faults = faults or NetworkFaults()
        self.stats = NetworkStats()
        self._heap: list[_InFlight[M]] = []
        self._seq = 0
        self._blocked: set[tuple[int, int]] = set()  # (src, dst) links that lose everything

    # -- partitions --

    def partition(self, *groups: set[int] | frozenset[int]) -> None:
        """Symmetric partition: nodes in different groups cannot talk (nodes in none: isolated
        from all groups listed)."""
        members = [set(g) for g in groups]
        every = set().union(*members)
        for a in every:
            for b in every:
                if a != b and not any(a in g and b in g for g in members):
                    self._blocked.add((a, b))

    def isolate(self, node: int, others: set[int] | frozenset[int]) -> None:
        for other in others:
            if other != node:
                self._blocked.add((node, other))
                self._blocked.add((other, node))

    def block(self, src: int, dst: int) -> None:
        """Asymmetric partition: `src` can no longer reach `dst` (the reverse still works)."""
        self._blocked.add((src, dst))

    def heal(self) -> None:
        self._blocked.clear()

    def is_blocked(self, src: int, dst: int) -> bool:
        return (src, dst) in self._blocked

    # -- traffic --

    def send(self, src: int, dst: int, message: M, now_ms: int) -> None:
        stats = self.stats
        stats.sent += 1
        if (src, dst) in self._blocked:
            stats.blocked += 1
            return
        rng = self._rng
        faults = self.faults
        if faults.drop_rate and rng.random() < faults.drop_rate:
            stats.dropped += 1
            return
        copies = 1
        if faults.duplicate_rate and rng.random() < faults.duplicate_rate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            if len(self._heap) >= MAX_IN_FLIGHT_MESSAGES:
                stats.dropped += 1
                return
            delay_ms = rng.randint(faults.min_delay_ms, faults.max_delay_ms)
            self._seq += 1
            heapq.heappush(self._heap, _InFlight(now_ms + delay_ms, self._seq, src, dst, message))

    def next_delivery_ms(self) -> int | None:
        return self._heap[0].deliver_at_ms if self._heap else None

    def pop_due(self, now_ms: int) -> tuple[int, int, M] | None:
        """The next message due at or before `now_ms` whose link is open: (src, dst, message)."""
        heap = self._heap
        while heap and heap[0].deliver_at_ms <= now_ms:
            item = heapq.heappop(heap)
            if (item.src, item.dst) in self._blocked:
                self.stats.blocked += 1
                continue
            self.stats.delivered += 1
            return item.src, item.dst, item.message
        return None

    def drop_to(self, node: int) -> None:
        """Forget in-flight messages to `node` (it crashed: its socket buffers are gone)."""
        kept = [m for m in self._heap if m.dst != node]
        if len(kept) != len(self._heap):
            self.stats.dropped += len(self._heap) - len(kept)
            self._heap = kept
            heapq.heapify(self._heap)

    def in_flight(self) -> int:
        return len(self._heap)


__all__ = ["SimNetwork", "NetworkFaults", "NetworkStats", "MAX_IN_FLIGHT_MESSAGES"]
