"""The anchor tree (aspen_gossip.tree) and how Plumtree follows it, driven by hand.

The tree is why a broadcast from any sender reaches the last node in <= 13 hops at 1,000 nodes
(test_sim): every node's eager links are its uplink toward the lowest id and its children.
"""

from __future__ import annotations

import blake3

from aspen_gossip.events import DispatchLazyPush, OutEvent, PeerDisconnected, RecvMessage, TimerExpired
from aspen_gossip.messages import (
    MAX_TREE_LEVEL,
    PRIORITY_HIGH,
    Gossip,
    Graft,
    IHave,
    Level,
    Neighbor,
    Prune,
)
from aspen_gossip.topic import Topic
from aspen_gossip.tree import BRANCH_MAX_LEVEL, AnchorTree

from tests.plugins.aspen_gossip.helpers import SECRET, Net, events, make, pid, sends


def levels(out: list[OutEvent]) -> dict[bytes, Level]:
    return {peer: m for peer, m in sends(out) if isinstance(m, Level)}


def tree_with(me: int, *peers: int) -> AnchorTree:
    tree = AnchorTree(pid(me))
    for n in peers:
        tree.neighbor_up(pid(n), [])
    return tree


def test_a_node_alone_is_its_own_anchor_and_tells_each_new_neighbor_once() -> None:
    tree = AnchorTree(pid(5))
    out: list[OutEvent] = []
    tree.neighbor_up(pid(7), out)
    assert sends(out) == [(pid(7), Level(pid(5), 0, False))]
    out = []
    tree.on_level(pid(7), Level(pid(7), 0, False), out)  # a higher id: nothing changes
    assert (tree.anchor, tree.level, tree.uplink) == (pid(5), 0, None)
    assert out == []  # nothing changed for 7, so nothing is resent


def test_the_uplink_is_nearest_the_lowest_id_and_a_tie_keeps_the_current_one() -> None:
    tree = tree_with(9, 4, 5, 6)
    out: list[OutEvent] = []
    tree.on_level(pid(6), Level(pid(2), 3, False), out)
    assert (tree.anchor, tree.level, tree.uplink) == (pid(2), 4, pid(6))
    # every neighbor hears the new level; only the uplink hears that it is one
    assert levels(out) == {pid(4): Level(pid(2), 4, False), pid(5): Level(pid(2), 4, False),
                           pid(6): Level(pid(2), 4, True)}
    tree.on_level(pid(5), Level(pid(2), 3, False), [])
    assert tree.uplink == pid(6)  # equally near: no churn
    tree.on_level(pid(4), Level(pid(2), 2, False), [])
    assert (tree.level, tree.uplink) == (3, pid(4))  # nearer wins
    tree.on_level(pid(5), Level(pid(1), 6, False), [])
    assert (tree.anchor, tree.level, tree.uplink) == (pid(1), 7, pid(5))  # a lower id wins
    assert tree.is_tree_link(pid(5)) and not tree.is_tree_link(pid(4)) and not tree.is_tree_link(pid(6))


def test_when_the_uplink_goes_equal_offers_pick_the_lowest_id_whatever_their_order() -> None:
    for order in ((6, 5), (5, 6)):
        tree = tree_with(9, 5, 6, 7)
        tree.on_level(pid(7), Level(pid(2), 1, False), [])
        for n in order:
            tree.on_level(pid(n), Level(pid(2), 2, False), [])
        assert tree.uplink == pid(7)
        tree.neighbor_down(pid(7), [])
        assert (tree.level, tree.uplink) == (3, pid(5)), order


def test_equal_offers_prefer_the_lowest_branch_over_the_current_uplink() -> None:
    # Deep nodes gathered under one level-1 ancestor meet below the anchor: two deepest nodes
    # under different level-1 ancestors are 2 x depth apart (14 at 1,000 nodes), under the same
    # one two hops fewer (test_sim, LDH)
    tree = tree_with(9, 4, 5, 6)
    tree.on_level(pid(6), Level(pid(1), 3, False, pid(30)), [])
    assert (tree.uplink, tree.branch) == (pid(6), pid(30))
    out: list[OutEvent] = []
    tree.on_level(pid(5), Level(pid(1), 3, False, pid(20)), out)
    assert (tree.uplink, tree.level, tree.branch) == (pid(5), 4, pid(20))
    assert levels(out)[pid(4)] == Level(pid(1), 4, False, pid(20))  # passed on down the tree
    tree.on_level(pid(4), Level(pid(1), 3, False, pid(20)), [])
    assert tree.uplink == pid(5)  # same level, same branch: no churn
    tree.on_level(pid(6), Level(pid(1), 2, False, pid(30)), [])
    assert (tree.uplink, tree.branch) == (pid(6), pid(30))  # nearer still beats a lower branch


def test_beyond_the_branch_bound_a_lower_branch_changes_nothing() -> None:
    # that far out the route is counting to infinity (the anchor died): reshaping by branch there
    # only multiplied the Level frames
    tree = tree_with(9, 5, 6)
    tree.on_level(pid(6), Level(pid(1), BRANCH_MAX_LEVEL, False, pid(30)), [])
    assert (tree.uplink, tree.level, tree.branch) == (pid(6), BRANCH_MAX_LEVEL + 1, b"")
    out: list[OutEvent] = []
    tree.on_level(pid(5), Level(pid(1), BRANCH_MAX_LEVEL, False, pid(20)), out)
    assert tree.uplink == pid(6) and out == []
    tree.on_level(pid(6), Level(pid(1), BRANCH_MAX_LEVEL - 1, False, pid(30)), [])
    tree.on_level(pid(5), Level(pid(1), BRANCH_MAX_LEVEL - 1, False, pid(20)), [])
    assert (tree.uplink, tree.branch) == (pid(5), pid(20))  # within it, the branch counts


def test_a_child_of_the_anchor_is_its_own_branch() -> None:
    tree = tree_with(9, 1, 4)
    out: list[OutEvent] = []
    tree.on_level(pid(1), Level(pid(1), 0, False), out)
    assert (tree.anchor, tree.level, tree.uplink, tree.branch) == (pid(1), 1, pid(1), pid(9))
    assert levels(out)[pid(4)] == Level(pid(1), 1, False, pid(9))


def test_a_child_is_a_tree_link_but_never_an_uplink() -> None:
    tree = tree_with(9, 4, 5)
    tree.on_level(pid(4), Level(pid(2), 3, False), [])
    # 5 names us its uplink; its offer (level 1) is derived from ours, so it must not count
    tree.on_level(pid(5), Level(pid(2), 1, True), [])
    assert tree.uplink == pid(4) and tree.level == 4
    assert tree.children() == [pid(5)] and tree.is_tree_link(pid(5))


def test_an_offer_at_the_level_bound_is_no_route() -> None:
    tree = tree_with(9, 4)
    tree.on_level(pid(4), Level(pid(1), MAX_TREE_LEVEL, False), [])
    assert (tree.anchor, tree.level, tree.uplink) == (pid(9), 0, None)
    tree.on_level(pid(4), Level(pid(1), MAX_TREE_LEVEL - 1, False), [])
    assert (tree.anchor, tree.level, tree.uplink) == (pid(1), MAX_TREE_LEVEL, pid(4))


def link(net: Net, a: Topic, b: Topic) -> None:
    """Make a and b neighbors (a asks b with high priority) and run the net."""
    net.feed(b.me, b.handle(RecvMessage(a.me, Neighbor(PRIORITY_HIGH, SECRET.membership_tag(a.me, b.me))), 0))
    net.run()


def test_nodes_agree_on_the_lowest_id_and_after_it_leaves_on_the_next() -> None:
    # 1 - 2, and a triangle 2 - 3 - 4: after 1 leaves, 3 and 4 each hold a stale offer of 1
    # from the other; split horizon and the level bound end it, and 2 becomes the anchor.
    nodes = {n: make(n) for n in (1, 2, 3, 4)}
    net = Net(*nodes.values())
    for a, b in ((1, 2), (2, 3), (3, 4), (2, 4)):
        link(net, nodes[a], nodes[b])
    assert [(t.plumtree.tree.anchor, t.plumtree.tree.level) for t in nodes.values()] == [
        (pid(1), 0), (pid(1), 1), (pid(1), 2), (pid(1), 2)]
    assert nodes[3].plumtree.tree.uplink == pid(2) and nodes[4].plumtree.tree.uplink == pid(2)
    assert nodes[2].plumtree.eager == {pid(1), pid(3), pid(4)}
    assert nodes[3].plumtree.eager == {pid(2)} and nodes[3].plumtree.lazy == {pid(4)}
    # 1 dies: 2 notices
    del net.topics[pid(1)]
    net.feed(pid(2), nodes[2].handle(PeerDisconnected(pid(1), "gone"), 0))
    net.run()
    assert [(t.plumtree.tree.anchor, t.plumtree.tree.level) for t in list(nodes.values())[1:]] == [
        (pid(2), 0), (pid(2), 1), (pid(2), 1)]


def gossip(content: bytes, round_: int = 0) -> Gossip:
    return Gossip(blake3.blake3(content).digest(), content, round_)


def placed_node() -> Topic:
    """Node 5 with neighbors 2 (its uplink toward anchor 1), 6 (its child) and 7 (off the tree)."""
    node = make(5)
    for n in (2, 6, 7):
        node.handle(RecvMessage(pid(n), Neighbor(PRIORITY_HIGH, SECRET.membership_tag(pid(n), node.me))), 0)
    node.handle(RecvMessage(pid(2), Level(pid(1), 1, False)), 0)
    node.handle(RecvMessage(pid(6), Level(pid(1), 3, True)), 0)
    node.handle(RecvMessage(pid(7), Level(pid(1), 2, False)), 0)
    return node


def test_eager_links_are_exactly_the_tree_links() -> None:
    node = placed_node()
    assert node.plumtree.eager == {pid(2), pid(6)} and node.plumtree.lazy == {pid(7)}
    # a new neighbor of a placed node starts lazy (pushing before its Level would go off-tree)
    node.handle(RecvMessage(pid(8), Neighbor(PRIORITY_HIGH, SECRET.membership_tag(pid(8), node.me))), 0)
    assert pid(8) in node.plumtree.lazy
    # but a node in no tree floods new neighbors, as Plumtree §3.6 says
    fresh = make(5)
    fresh.handle(RecvMessage(pid(8), Neighbor(PRIORITY_HIGH, SECRET.membership_tag(pid(8), fresh.me))), 0)
    assert fresh.plumtree.eager == {pid(8)}


def test_off_tree_payloads_are_delivered_and_pruned_and_tree_links_never_are() -> None:
    node = placed_node()
    msg = gossip(b"from the side")
    out = node.handle(RecvMessage(pid(7), msg), 1)
    assert events(out)  # delivered
    assert (pid(7), Prune()) in sends(out)  # 7 should not push to us
    # the tree's copy is a duplicate, but a tree link is not pruned
    assert not any(isinstance(m, Prune) for _, m in sends(node.handle(RecvMessage(pid(2), msg), 2)))
    # nor does a Prune from a tree link (a Level frame in flight) make it lazy
    node.handle(RecvMessage(pid(6), Prune()), 3)
    assert node.plumtree.eager == {pid(2), pid(6)}


def test_an_off_tree_payload_is_only_announced_until_the_tree_copy_comes() -> None:
    node = placed_node()
    msg = gossip(b"the long way round", 9)
    out = node.handle(RecvMessage(pid(7), msg), 1)
    assert events(out)  # delivered at once
    assert [m for _, m in sends(out) if isinstance(m, Gossip)] == []  # but not pushed on
    out = node.handle(TimerExpired(DispatchLazyPush()), 6)
    assert sorted(p for p, m in sends(out) if isinstance(m, IHave)) == [pid(2), pid(6)]  # tree links too
    # the tree's copy (round 6) goes down the tree at its round: the subtree is not fed round 10
    out = node.handle(RecvMessage(pid(2), gossip(b"the long way round", 6)), 20)
    assert sends(out) == [(pid(6), gossip(b"the long way round", 7))]
    # once: a further copy is a plain duplicate
    assert sends(node.handle(RecvMessage(pid(6), gossip(b"the long way round", 8)), 21)) == []


def test_a_held_payload_keeps_its_own_round_when_that_is_lower() -> None:
    node = placed_node()
    node.handle(RecvMessage(pid(7), gossip(b"a shortcut", 1)), 1)
    out = node.handle(RecvMessage(pid(6), gossip(b"a shortcut", 5)), 30)  # up from the child
    assert sends(out) == [(pid(2), gossip(b"a shortcut", 2))]


def test_a_graft_repairs_one_message_without_reshaping_the_tree() -> None:
    node = placed_node()
    message_id, _ = node.broadcast(b"cached", 0)
    out = node.handle(RecvMessage(pid(7), Graft(message_id, 3)), 5)
    assert sends(out) == [(pid(7), Gossip(message_id, b"cached", 3))]
    assert pid(7) in node.plumtree.lazy  # still off the tree
