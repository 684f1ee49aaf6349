"""Helpers for driving gossip cores by hand in tests (no sockets, virtual time)."""

from __future__ import annotations

import random
from collections import deque

from aspen.cluster_secret import ClusterSecret
from aspen_gossip.config import GossipConfig
from aspen_gossip.events import (
    DisconnectPeer,
    EmitEvent,
    Event,
    OutEvent,
    RecvMessage,
    ScheduleTimer,
    SendMessage,
)
from aspen_gossip.messages import Frame
from aspen_gossip.topic import Topic

SECRET = ClusterSecret.from_cookie("test cookie")
OTHER_SECRET = ClusterSecret.from_cookie("another cluster's cookie")
MAX_DELIVERIES = 10_000  # bound on every delivery loop


def pid(n: int) -> bytes:
    """The test peer id number n (n >= 1)."""
    return n.to_bytes(32, "big")


def make(n: int, config: GossipConfig | None = None, secret: ClusterSecret = SECRET, seed: int | None = None) -> Topic:
    return Topic(pid(n), secret, config or GossipConfig(), rng=random.Random(n if seed is None else seed))


def sends(out: list[OutEvent]) -> list[tuple[bytes, Frame]]:
    return [(a.peer, a.message) for a in out if isinstance(a, SendMessage)]


def sent_types(out: list[OutEvent], to: bytes | None = None) -> list[str]:
    return [type(m).__name__ for p, m in sends(out) if to is None or p == to]


def events(out: list[OutEvent]) -> list[Event]:
    return [a.event for a in out if isinstance(a, EmitEvent)]


def timers(out: list[OutEvent]) -> list[ScheduleTimer]:
    return [a for a in out if isinstance(a, ScheduleTimer)]


def disconnects(out: list[OutEvent]) -> list[DisconnectPeer]:
    return [a for a in out if isinstance(a, DisconnectPeer)]


class Net:
    """Topics keyed by id, FIFO delivery of every SendMessage, all at one virtual instant."""

    def __init__(self, *topics: Topic) -> None:
        self.topics = {t.me: t for t in topics}
        self.queue: deque[tuple[bytes, bytes, Frame]] = deque()
        self.outputs: dict[bytes, list[OutEvent]] = {t.me: [] for t in topics}

    def feed(self, src: bytes, out: list[OutEvent]) -> None:
        self.outputs[src].extend(out)
        for peer, message in sends(out):
            self.queue.append((src, peer, message))

    def run(self, now_ms: int = 0) -> int:
        delivered = 0
        while self.queue:
            assert delivered < MAX_DELIVERIES, "message storm"
            src, dst, message = self.queue.popleft()
            topic = self.topics.get(dst)
            if topic is None:
                continue
            delivered += 1
            self.feed(dst, topic.handle(RecvMessage(src, message), now_ms))
        return delivered
