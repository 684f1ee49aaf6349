"""HyParView behaviour of the gossip core, driven by hand (paper: Leitão et al., DSN 2007)."""

from __future__ import annotations

import pytest

from aspen.errors import ConfigError
from aspen_gossip.config import GossipConfig
from aspen_gossip.events import (
    DialFailed,
    JoinPeers,
    JoinTimeout,
    NeighborDown,
    NeighborRequestTimeout,
    NeighborUp,
    PeerDisconnected,
    PeerFailed,
    Quit,
    RecvMessage,
    ShuffleTimer,
    TimerExpired,
)
from aspen_gossip.hyparview import REJECT_BAD_TAG, REJECT_NOT_NEIGHBOR
from aspen_gossip.messages import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    Disconnect,
    ForwardJoin,
    Gossip,
    Join,
    Neighbor,
    PeerInfo,
    Shuffle,
    ShuffleReply,
)
from aspen_gossip.topic import Topic

from tests.plugins.aspen_gossip.helpers import (
    OTHER_SECRET,
    SECRET,
    Net,
    disconnects,
    events,
    make,
    pid,
    sends,
    sent_types,
    timers,
)


def neighbor(topic: Topic, frm: int, priority: int = PRIORITY_HIGH) -> Neighbor:
    """A Neighbor frame as peer `frm` would send it to `topic` (valid membership tag)."""
    return Neighbor(priority, SECRET.membership_tag(pid(frm), topic.me))


def connect(topic: Topic, *peers: int) -> None:
    """Put `peers` in `topic`'s active view as if they had asked with high priority."""
    for n in peers:
        topic.handle(RecvMessage(pid(n), neighbor(topic, n)), 0)


def test_join_makes_both_sides_neighbors() -> None:
    a, b = make(1), make(2)
    net = Net(a, b)
    out = a.handle(JoinPeers((PeerInfo(b.me),)), 0)
    assert sent_types(out) == ["Join"]
    assert any(isinstance(t.timer, JoinTimeout) and t.deadline_ms == a.config.join_timeout_ms for t in timers(out))
    net.feed(a.me, out)
    net.run()
    assert a.active_view == [b.me] and b.active_view == [a.me]
    assert NeighborUp(a.me) in events(net.outputs[b.me])
    assert NeighborUp(b.me) in events(net.outputs[a.me])
    # the answered join's timeout is a no-op
    assert a.handle(TimerExpired(JoinTimeout(b.me)), a.config.join_timeout_ms) == []


def test_unauthenticated_join_is_refused_and_the_joiner_hears_of_it() -> None:
    member = make(2)
    outsider = make(9, secret=OTHER_SECRET)
    out = outsider.handle(JoinPeers((PeerInfo(member.me),)), 0)
    (peer, join), = sends(out)
    refused = member.handle(RecvMessage(outsider.me, join), 5)
    assert member.active_view == [] and events(refused) == []
    assert [d.reason for d in disconnects(refused)] == [REJECT_BAD_TAG]
    assert member.stats[REJECT_BAD_TAG] == 1
    # a tag for another receiver does not work either (tags are bound to sender and receiver)
    stolen = Join(SECRET.membership_tag(pid(9), pid(3)))
    member.handle(RecvMessage(pid(9), stolen), 6)
    assert member.active_view == [] and member.stats[REJECT_BAD_TAG] == 2
    # the joiner is told, instead of hanging silently
    later = outsider.handle(TimerExpired(JoinTimeout(member.me)), outsider.config.join_timeout_ms)
    assert events(later) == [PeerFailed(member.me, "join_timeout")]


def test_contact_forwards_join_to_its_other_neighbors_with_arwl() -> None:
    contact = make(1)
    connect(contact, 2, 3, 4)
    out = contact.handle(RecvMessage(pid(9), Join(SECRET.membership_tag(pid(9), pid(1)))), 0)
    assert pid(9) in contact.active_view
    assert (pid(9), "Neighbor") in [(p, type(m).__name__) for p, m in sends(out)]
    walks = [(p, m) for p, m in sends(out) if isinstance(m, ForwardJoin)]
    assert sorted(p for p, _ in walks) == [pid(2), pid(3), pid(4)]
    assert all(m.ttl == contact.config.active_random_walk_length and m.peer.peer_id == pid(9) for _, m in walks)


def test_forward_join_walk_decrements_ttl_and_passes_prwl_into_passive() -> None:
    node = make(1)
    connect(node, 2, 3, 4)
    walk = ForwardJoin(PeerInfo(pid(9)), 6)
    out = node.handle(RecvMessage(pid(2), walk), 0)
    (nxt, fwd), = sends(out)
    assert nxt in (pid(3), pid(4)) and isinstance(fwd, ForwardJoin) and fwd.ttl == 5
    assert pid(9) not in node.passive_view
    prwl = node.config.passive_random_walk_length
    out = node.handle(RecvMessage(pid(2), ForwardJoin(PeerInfo(pid(8)), prwl)), 0)
    assert pid(8) in node.passive_view  # paper (ii): at ttl == PRWL, remember in passive
    assert [m.ttl for _, m in sends(out) if isinstance(m, ForwardJoin)] == [prwl - 1]


def test_forward_join_ends_at_ttl_zero_with_a_neighbor_request() -> None:
    node = make(1)
    connect(node, 2, 3)
    out = node.handle(RecvMessage(pid(2), ForwardJoin(PeerInfo(pid(9)), 0)), 0)
    assert [(p, type(m).__name__, getattr(m, "priority", None)) for p, m in sends(out)] == [
        (pid(9), "Neighbor", PRIORITY_HIGH)]
    assert pid(9) not in node.active_view  # added only when the newcomer answers (iroh)
    assert any(isinstance(t.timer, NeighborRequestTimeout) for t in timers(out))
    node.handle(RecvMessage(pid(9), neighbor(node, 9)), 10)
    assert pid(9) in node.active_view


def test_forward_join_ends_at_a_node_with_a_single_neighbor() -> None:
    node = make(1)
    connect(node, 2)
    out = node.handle(RecvMessage(pid(2), ForwardJoin(PeerInfo(pid(9)), 5)), 0)
    assert sent_types(out, to=pid(9)) == ["Neighbor"]


def test_low_priority_neighbor_request_is_refused_when_full_high_evicts() -> None:
    node = make(1)
    connect(node, 2, 3, 4, 5, 6)
    assert len(node.active_view) == 5
    out = node.handle(RecvMessage(pid(7), neighbor(node, 7, PRIORITY_LOW)), 0)
    assert sent_types(out, to=pid(7)) == ["ShuffleReply", "Disconnect"]  # a sample, then no
    assert pid(7) not in node.active_view and pid(7) in node.passive_view
    out = node.handle(RecvMessage(pid(8), neighbor(node, 8, PRIORITY_HIGH)), 0)
    assert pid(8) in node.active_view and len(node.active_view) == 5
    (victim_down,) = [e for e in events(out) if isinstance(e, NeighborDown)]
    assert sent_types(out, to=victim_down.peer) == ["Disconnect"]
    assert victim_down.peer in node.passive_view  # evicted alive: kept as a fallback


def test_low_priority_request_is_accepted_into_a_free_slot() -> None:
    node = make(1)
    connect(node, 2)
    out = node.handle(RecvMessage(pid(7), neighbor(node, 7, PRIORITY_LOW)), 0)
    assert pid(7) in node.active_view and NeighborUp(pid(7)) in events(out)


def test_disconnect_is_replaced_from_the_passive_view() -> None:
    node = make(1)
    connect(node, 2)
    node.hyparview.add_passive(pid(20), None, [])
    node.hyparview.add_passive(pid(21), None, [])
    out = node.handle(RecvMessage(pid(2), Disconnect(True)), 0)
    assert NeighborDown(pid(2)) in events(out)
    assert pid(2) in node.passive_view  # alive
    requests = [(p, m) for p, m in sends(out) if isinstance(m, Neighbor)]
    # the active view is empty: high priority; one request per free slot, never to the leaver
    assert requests and all(m.priority == PRIORITY_HIGH for _, m in requests)
    assert pid(2) not in [p for p, _ in requests]
    assert {p for p, _ in requests} <= {pid(20), pid(21)}


def test_broken_connection_drops_the_peer_and_refills() -> None:
    node = make(1)
    connect(node, 2, 3)
    node.hyparview.add_passive(pid(20), None, [])
    out = node.handle(PeerDisconnected(pid(2), "reset"), 0)
    assert NeighborDown(pid(2)) in events(out)
    assert pid(2) not in node.passive_view  # failed nodes leave the passive view (paper p7)
    assert [(p, m.priority) for p, m in sends(out) if isinstance(m, Neighbor)] == [(pid(20), PRIORITY_LOW)]


def test_unanswered_neighbor_request_times_out_and_the_next_passive_peer_is_tried() -> None:
    config = GossipConfig(active_view_capacity=1)
    node = make(1, config)
    for n in (20, 21):
        node.hyparview.add_passive(pid(n), None, [])
    node.hyparview.refill(0, [])
    (first,) = node.hyparview.pending
    out = node.handle(TimerExpired(NeighborRequestTimeout(first)), config.neighbor_request_timeout_ms)
    assert events(out) == [PeerFailed(first, "neighbor_request_timeout")]
    assert first not in node.passive_view
    (second,) = [p for p, m in sends(out) if isinstance(m, Neighbor)]
    assert second != first


def test_failed_dial_is_reported() -> None:
    node = make(1)
    node.handle(JoinPeers((PeerInfo(pid(2)),)), 0)
    out = node.handle(DialFailed(pid(2), "no route"), 10)
    assert events(out) == [PeerFailed(pid(2), "dial_failed: no route")]
    assert node.handle(TimerExpired(JoinTimeout(pid(2))), node.config.join_timeout_ms) == []


def test_shuffle_exchanges_samples_and_fills_passive_views() -> None:
    a, b, c = make(1), make(2), make(3)
    connect(a, 2)
    connect(b, 1, 3)
    connect(c, 2)
    for n in (40, 41, 42):
        a.hyparview.add_passive(pid(n), None, [])
    for n in (50, 51):
        c.hyparview.add_passive(pid(n), None, [])
    net = Net(a, b, c)
    out = a.handle(TimerExpired(ShuffleTimer()), 60_000)
    assert any(isinstance(t.timer, ShuffleTimer) and t.deadline_ms == 60_000 + a.config.shuffle_interval_ms
               for t in timers(out))
    (target, shuffle), = [(p, m) for p, m in sends(out) if isinstance(m, Shuffle)]
    assert target == pid(2) and shuffle.ttl == a.config.shuffle_random_walk_length
    assert {i.peer_id for i in shuffle.nodes} == {pid(40), pid(41), pid(42)}
    net.feed(a.me, out)
    net.run(60_000)
    # b has one other neighbor (c) besides the origin: the walk goes on to c, which has a single
    # neighbor, so it ends there: c keeps a's sample and a receives c's passive peers
    assert {pid(1), pid(40), pid(41), pid(42)} <= set(c.passive_view)
    assert {pid(50), pid(51)} <= set(a.passive_view)
    replies = [m for p, m in sends(net.outputs[c.me]) if isinstance(m, ShuffleReply)]
    assert len(replies) == 1


def test_shuffle_reply_without_a_valid_tag_is_ignored() -> None:
    a = make(1)
    bogus = ShuffleReply(OTHER_SECRET.membership_tag(pid(7), pid(1)), [PeerInfo(pid(70))])
    out = a.handle(RecvMessage(pid(7), bogus), 0)
    assert pid(70) not in a.passive_view and a.stats[REJECT_BAD_TAG] == 1
    assert [d.reason for d in disconnects(out)] == [REJECT_BAD_TAG]


def test_frames_from_non_neighbors_are_dropped_and_answered_with_disconnect() -> None:
    a = make(1)
    out = a.handle(RecvMessage(pid(7), Gossip(bytes(32), b"x", 0)), 0)
    assert events(out) == [] and sent_types(out, to=pid(7)) == ["Disconnect"]
    out = a.handle(RecvMessage(pid(7), ForwardJoin(PeerInfo(pid(8)), 3)), 0)
    assert pid(8) not in a.passive_view and a.stats[REJECT_NOT_NEIGHBOR] == 2
    # a Disconnect from a stranger is never answered (no Disconnect ping-pong)
    assert a.handle(RecvMessage(pid(7), Disconnect(True)), 0) == []


def test_quit_says_goodbye_to_every_neighbor() -> None:
    a = make(1)
    connect(a, 2, 3)
    out = a.handle(Quit(), 0)
    assert sorted(p for p, m in sends(out) if m == Disconnect(False)) == [pid(2), pid(3)]
    assert a.active_view == [] and len([e for e in events(out) if isinstance(e, NeighborDown)]) == 2


def test_too_many_bootstrap_peers_is_a_usage_error() -> None:
    from aspen.errors import UsageError
    with pytest.raises(UsageError, match="at most 16"):
        make(1).handle(JoinPeers(tuple(PeerInfo(pid(n)) for n in range(2, 19))), 0)


@pytest.mark.parametrize("field,value", [("active_view_capacity", 0), ("max_message_size", 100),
                                         ("passive_random_walk_length", 9),
                                         ("active_refresh_probability", 1.5)])
def test_nonsense_config_is_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        GossipConfig(**{field: value}).validate()  # type: ignore[arg-type]


def test_frames_round_trip_on_the_wire_and_garbage_is_refused() -> None:
    import msgspec

    from aspen.addr import EndpointAddrWire, SocketAddr
    from aspen_gossip.messages import (
        Graft,
        IHave,
        IHaveEntry,
        Level,
        MAX_TREE_LEVEL,
        Prune,
        StreamHeader,
        decode_frame,
        decode_stream_header,
        encode_frame,
    )

    addr = EndpointAddrWire(pid(5), "https://relay.example./", [SocketAddr("192.0.2.5", 7000)])
    tag = SECRET.membership_tag(pid(1), pid(2))
    frames = [
        Join(tag, addr), ForwardJoin(PeerInfo(pid(3), addr), 6), Shuffle(PeerInfo(pid(1)), [PeerInfo(pid(4))], 6),
        ShuffleReply(tag, [PeerInfo(pid(4), addr)]), Neighbor(PRIORITY_LOW, tag, None), Disconnect(True),
        Gossip(bytes(32), b"payload", 3), Prune(), Graft(None, 2), Graft(bytes(32), 0),
        IHave([IHaveEntry(bytes(32), 1)]), Level(pid(1), MAX_TREE_LEVEL, True), Level(pid(1), 3, False, pid(2)),
    ]
    for frame in frames:
        assert decode_frame(encode_frame(frame)) == frame
    assert decode_stream_header(encode_frame(StreamHeader(SECRET.topic_id))).topic_id == SECRET.topic_id
    for garbage in (encode_frame(Gossip(bytes(32), b"x", 0))[:-1], b"\x93\x0a\x00\x00",
                    msgspec.msgpack.encode([10, b"short id", b"x", 0, 0]),
                    msgspec.msgpack.encode([10, bytes(32), b"x", 70_000, 0]),  # round > u16
                    msgspec.msgpack.encode([14, bytes(32), MAX_TREE_LEVEL + 1, False]),
                    msgspec.msgpack.encode([14, bytes(32), 3, False, bytes(33)]),  # branch > an id
                    msgspec.msgpack.encode([14, b"short id", 1, False])):
        with pytest.raises(msgspec.DecodeError):
            decode_frame(garbage)
