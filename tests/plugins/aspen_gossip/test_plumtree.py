"""Plumtree behaviour of the gossip core, driven by hand (paper: Leitão et al., SRDS 2007)."""

from __future__ import annotations

import blake3
import pytest

from aspen.errors import LimitExceeded
from aspen_gossip.config import GossipConfig
from aspen_gossip.events import (
    Broadcast,
    DispatchLazyPush,
    EvictCache,
    NeighborDown,
    PeerDisconnected,
    Received,
    RecvMessage,
    SendGraft,
    TimerExpired,
)
from aspen_gossip.messages import (
    PRIORITY_HIGH,
    SCOPE_NEIGHBORS,
    Gossip,
    Graft,
    IHave,
    IHaveEntry,
    Neighbor,
    Prune,
    encode_frame,
)
from aspen_gossip.plumtree import STAT_CACHE_DROPPED, STAT_SEEN_DROPPED, STAT_SPOOFED
from aspen_gossip.topic import Topic

from tests.plugins.aspen_gossip.helpers import SECRET, events, make, pid, sends, sent_types, timers


def connect(topic: Topic, *peers: int) -> None:
    for n in peers:
        topic.handle(RecvMessage(pid(n), Neighbor(PRIORITY_HIGH, SECRET.membership_tag(pid(n), topic.me))), 0)


def gossip(content: bytes, round_: int = 0) -> Gossip:
    return Gossip(blake3.blake3(content).digest(), content, round_)


def test_new_neighbors_are_eager_and_a_broadcast_floods_them() -> None:
    node = make(1)
    connect(node, 2, 3)
    assert node.plumtree.eager == {pid(2), pid(3)} and node.plumtree.lazy == set()
    message_id, out = node.broadcast(b"hello", 0)
    assert message_id == blake3.blake3(b"hello").digest()
    assert sorted(p for p, m in sends(out) if m == Gossip(message_id, b"hello", 0)) == [pid(2), pid(3)]
    assert events(out) == []  # the sender does not deliver to itself


def test_received_payload_is_delivered_once_and_pushed_on_with_round_plus_one() -> None:
    node = make(1)
    connect(node, 2, 3, 4)
    msg = gossip(b"payload", 2)
    out = node.handle(RecvMessage(pid(2), msg), 0)
    assert events(out) == [Received(b"payload", msg.message_id, pid(2), 0, 2)]
    assert sorted(p for p, m in sends(out) if isinstance(m, Gossip) and m.round == 3) == [pid(3), pid(4)]
    # the duplicate from another eager peer: no delivery, the link turns lazy on both sides
    out = node.handle(RecvMessage(pid(3), msg), 1)
    assert events(out) == [] and sends(out) == [(pid(3), Prune())]
    # a duplicate from a peer that is lazy here still gets a Prune: it is still pushing to us
    out = node.handle(RecvMessage(pid(3), msg), 1)
    assert sends(out) == [(pid(3), Prune())]
    assert pid(3) in node.plumtree.lazy and pid(3) not in node.plumtree.eager
    # and a Prune received turns that sender lazy here too
    node.handle(RecvMessage(pid(4), Prune()), 2)
    assert node.plumtree.lazy == {pid(3), pid(4)} and node.plumtree.eager == {pid(2)}


def test_lazy_peers_get_batched_ihaves_after_the_dispatch_window() -> None:
    node = make(1)
    connect(node, 2, 3)
    node.handle(RecvMessage(pid(3), Prune()), 0)
    id1, out1 = node.broadcast(b"one", 0)
    id2, out2 = node.broadcast(b"two", 1)
    assert sent_types(out1 + out2, to=pid(3)) == []
    (dispatch,) = [t for t in timers(out1 + out2) if isinstance(t.timer, DispatchLazyPush)]
    assert dispatch.deadline_ms == node.config.dispatch_timeout_ms
    out = node.handle(TimerExpired(DispatchLazyPush()), dispatch.deadline_ms)
    assert sends(out) == [(pid(3), IHave([IHaveEntry(id1, 0), IHaveEntry(id2, 0)]))]


def test_ihave_for_a_missing_message_grafts_after_timeout_then_tries_the_next_announcer() -> None:
    node = make(1)
    connect(node, 2, 3, 4)
    for n in (2, 3):
        node.handle(RecvMessage(pid(n), Prune()), 0)
    msg = gossip(b"late")
    out = node.handle(RecvMessage(pid(2), IHave([IHaveEntry(msg.message_id, 1)])), 10)
    assert [(t.deadline_ms, t.timer) for t in timers(out)] == [(10 + node.config.graft_timeout_1_ms,
                                                                 SendGraft(msg.message_id))]
    node.handle(RecvMessage(pid(3), IHave([IHaveEntry(msg.message_id, 2)])), 12)
    t1 = 10 + node.config.graft_timeout_1_ms
    out = node.handle(TimerExpired(SendGraft(msg.message_id)), t1)
    assert sends(out) == [(pid(2), Graft(msg.message_id, 1))]
    assert pid(2) in node.plumtree.eager  # grafting repairs the tree
    (again,) = timers(out)
    assert again.deadline_ms == t1 + node.config.graft_timeout_2_ms
    out = node.handle(TimerExpired(SendGraft(msg.message_id)), again.deadline_ms)
    assert sends(out) == [(pid(3), Graft(msg.message_id, 2))]
    # the payload arrives: delivered, and the pending graft timer is now a no-op
    assert events(node.handle(RecvMessage(pid(3), Gossip(msg.message_id, b"late", 2)), 200))
    assert node.handle(TimerExpired(SendGraft(msg.message_id)), 300) == []


def test_ihave_for_a_known_message_is_ignored() -> None:
    node = make(1)
    connect(node, 2)
    message_id, _ = node.broadcast(b"known", 0)
    assert node.handle(RecvMessage(pid(2), IHave([IHaveEntry(message_id, 0)])), 1) == []


def test_graft_returns_the_cached_payload_and_makes_the_peer_eager() -> None:
    node = make(1)
    connect(node, 2)
    node.handle(RecvMessage(pid(2), Prune()), 0)
    message_id, _ = node.broadcast(b"cached", 0)
    out = node.handle(RecvMessage(pid(2), Graft(message_id, 4)), 5)
    assert sends(out) == [(pid(2), Gossip(message_id, b"cached", 4))]
    assert pid(2) in node.plumtree.eager


def test_tree_is_optimised_by_hop_count() -> None:
    node = make(1)
    connect(node, 2, 3)
    node.handle(RecvMessage(pid(3), Prune()), 0)
    msg = gossip(b"far away", 1 + node.config.optimization_threshold)
    node.handle(RecvMessage(pid(3), IHave([IHaveEntry(msg.message_id, 1)])), 0)
    out = node.handle(RecvMessage(pid(2), msg), 50)
    # the eager path took `threshold` hops more than the announced one: swap the links
    assert (pid(3), Graft(None, 1)) in sends(out)
    assert (pid(2), Prune()) in sends(out)
    assert node.plumtree.eager == {pid(3)} and node.plumtree.lazy == {pid(2)}
    assert events(out)  # still delivered
    # the grafted peer announced the payload, so it is not pushed to it again
    assert not any(p == pid(3) and isinstance(m, Gossip) for p, m in sends(out))


def test_small_hop_difference_does_not_reshape_the_tree() -> None:
    node = make(1)
    connect(node, 2, 3)
    node.handle(RecvMessage(pid(3), Prune()), 0)
    msg = gossip(b"near", node.config.optimization_threshold)  # only threshold - 1 hops longer
    node.handle(RecvMessage(pid(3), IHave([IHaveEntry(msg.message_id, 1)])), 0)
    out = node.handle(RecvMessage(pid(2), msg), 50)
    assert not any(isinstance(m, (Graft, Prune)) for _, m in sends(out))


def test_neighbor_down_removes_peer_from_both_sets() -> None:
    node = make(1)
    connect(node, 2, 3)
    out = node.handle(PeerDisconnected(pid(2)), 0)
    assert NeighborDown(pid(2)) in events(out)
    assert pid(2) not in node.plumtree.eager | node.plumtree.lazy


def test_spoofed_message_id_is_dropped() -> None:
    node = make(1)
    connect(node, 2, 3)
    out = node.handle(RecvMessage(pid(2), Gossip(blake3.blake3(b"real").digest(), b"fake", 0)), 0)
    assert events(out) == [] and sends(out) == [] and node.stats[STAT_SPOOFED] == 1


def test_seen_ids_and_payloads_expire() -> None:
    config = GossipConfig(message_cache_retention_ms=1_000, message_id_retention_ms=3_000,
                          cache_evict_interval_ms=500)
    node = make(1, config)
    connect(node, 2)
    message_id, out = node.broadcast(b"ephemeral", 0)
    (evict,) = [t for t in timers(out) if isinstance(t.timer, EvictCache)]
    now = evict.deadline_ms
    while now <= 3_000:  # bounded: the runtime echoes each evict timer it was given
        out = node.handle(TimerExpired(EvictCache()), now)
        if now >= 1_000:
            assert not node.plumtree.is_cached(message_id)
        next_evicts = [t for t in timers(out) if isinstance(t.timer, EvictCache)]
        if not next_evicts:
            break
        now = next_evicts[0].deadline_ms
    assert not node.plumtree.has_seen(message_id) and node.plumtree.seen_count == 0
    # once forgotten, the same content is a new message again (after retention, by design)
    assert events(node.handle(RecvMessage(pid(2), gossip(b"ephemeral")), now + 1))


def test_caches_are_bounded_and_drop_the_oldest_with_a_counter() -> None:
    config = GossipConfig(max_seen_ids=10, max_cached_messages=4, max_cached_bytes=1_000)
    node = make(1, config)
    connect(node, 2)
    ids = [node.broadcast(f"m{i}".encode(), i)[0] for i in range(25)]
    assert node.plumtree.seen_count == 10 and node.plumtree.cached_count == 4
    assert not node.plumtree.has_seen(ids[0]) and node.plumtree.has_seen(ids[-1])
    assert node.stats[STAT_SEEN_DROPPED] == 15 and node.stats[STAT_CACHE_DROPPED] == 21
    big = node.broadcast(b"x" * 600, 30)[0]
    node.broadcast(b"y" * 600, 31)
    assert not node.plumtree.is_cached(big)  # byte bound: 1,200 > 1,000


def test_missing_ids_are_bounded() -> None:
    node = make(1, GossipConfig(max_missing_ids=3))
    connect(node, 2)
    entries = [IHaveEntry(blake3.blake3(bytes([i])).digest(), 1) for i in range(5)]
    node.handle(RecvMessage(pid(2), IHave(entries)), 0)
    assert node.plumtree.missing_count == 3 and node.stats["missing_ids_dropped"] == 2


def test_oversized_publish_raises_a_clear_error() -> None:
    node = make(1)
    connect(node, 2)
    limit = node.plumtree.max_content_size()
    assert 4000 < limit < 4096
    _, out = node.broadcast(b"a" * limit, 0)
    (frame,) = [m for _, m in sends(out)]
    assert len(encode_frame(frame)) <= node.config.max_message_size
    with pytest.raises(LimitExceeded) as info:
        node.handle(Broadcast(b"a" * (limit + 1)), 0)
    assert info.value.name == "max_message_size" and info.value.limit == 4096
    assert info.value.value > 4096 and "max_message_size exceeded" in str(info.value)


def test_max_message_size_is_configurable() -> None:
    node = make(1, GossipConfig(max_message_size=1024))
    with pytest.raises(LimitExceeded):
        node.broadcast(b"a" * 1024, 0)
    node.broadcast(b"a" * node.plumtree.max_content_size(), 0)


def test_neighbor_scope_goes_one_hop_to_every_neighbor_and_is_not_forwarded() -> None:
    a = make(1)
    connect(a, 2, 3)
    a.handle(RecvMessage(pid(3), Prune()), 0)
    _, out = a.broadcast(b"hi neighbors", 0, scope=SCOPE_NEIGHBORS)
    assert sorted(p for p, m in sends(out) if isinstance(m, Gossip)) == [pid(2), pid(3)]
    b = make(2)
    connect(b, 1, 4)
    frame = sends(out)[0][1]
    out = b.handle(RecvMessage(pid(1), frame), 1)
    assert [e.scope for e in events(out) if isinstance(e, Received)] == [SCOPE_NEIGHBORS]
    assert sends(out) == []
