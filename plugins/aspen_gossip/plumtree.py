"""Plumtree broadcast for one topic, sans-IO (Leitão, Pereira, Rodrigues, SRDS 2007).

Rules of this module
--------------------
- No I/O, no clock, no randomness: `now_ms` comes in, outputs are appended to the caller's `out`.
- The neighbor set is HyParView's active view, fed in through `neighbor_up` / `neighbor_down`
  by `aspen_gossip.topic.Topic`, which also guarantees that every frame handed to `on_message`
  comes from a current neighbor.
- Every structure is bounded by a config field; overflow drops the oldest entry and counts it in
  `stats` (STYLE rule 12). Nothing grows with time: ids and payloads expire.

Theory of operation
-------------------
Neighbors are split into an *eager* set (payloads are pushed to them) and a *lazy* set (only
`IHave(id, round)` announcements are, batched over `dispatch_timeout_ms`). New neighbors start
eager, so the first broadcast floods; every duplicate payload makes the receiver move the sender
to lazy and answer `Prune`, which moves the receiver to lazy at the sender: the eager links
shrink to a spanning tree (paper §3.3). When an `IHave` announces an id we lack, a timer
(`graft_timeout_1_ms`) starts; if the payload has not arrived when it fires we send `Graft` to
the first announcer (making the link eager again, repairing the tree) and try the next announcer
every `graft_timeout_2_ms` (§3.5). Tree optimisation (§3.8): when a payload arrives by eager push
at round r while an `IHave` had announced it at round r' with r - r' >= `optimization_threshold`,
we graft the announcer (`Graft(None, r')`) and prune the eager sender.

The anchor tree (aspen_gossip.tree) replaces arrival order as the judge of links. Once a neighbor
has sent its `Level` frame, the link is eager exactly when it is a tree link (my uplink or my
child), on both ends, and lazy otherwise; §3.8 and "the first sender becomes eager" no longer
apply to it. Why: with random senders §3.8 pulls the one shared tree toward each sender in turn
and it never settles (LDH 19-22 at 1,000 nodes; with the anchor tree <= 13). What stays:
- Repair: an IHave'd id that does not arrive is grafted as before, from the announcer with the
  lowest round; for a tree-placed peer the Graft fetches that one payload without making the link
  eager, so the tree re-forms by itself.
- An off-tree payload (a Level in flight, a Graft reply) is delivered and answered with Prune;
  a duplicate from a tree link prunes nothing (tree links stay).
- An off-tree payload is not pushed on, only announced (IHave, tree links included), and held:
  when the tree's copy comes it is pushed down the tree at the lower of the two rounds. Pushed at
  once, a copy that came the long way fed a whole subtree its higher round (seed 5 of the
  simulation: LDH 15, through one off-tree hop mid-path). If the tree's copy never comes, the
  IHave lets the subtree Graft it from us, one graft timeout later.
- A Prune from a tree link is ignored: the Level frames already in flight settle who is whose.
- A node in a tree starts a new neighbor lazy, not eager (§3.6): the Level frames place it one
  round trip later; a node in no tree yet (just joined) still floods its new neighbors.

Message id = blake3(content); a payload whose id does not match its content is dropped and
counted ("spoofed_message_id"). Seen ids are kept `message_id_retention_ms` (dedup), payloads
`message_cache_retention_ms` (to answer Grafts).

Round and hop: the source pushes round 0; a node receiving round r forwards round r + 1. The
paper counts the source's transmission as hop 1, so a delivery at round r is at hop r + 1.
"""

from __future__ import annotations

from collections import Counter, deque

import blake3

from aspen.errors import LimitExceeded, UsageError

from aspen_gossip.config import MAX_ANNOUNCERS_PER_ID, MAX_HELD_IDS, GossipConfig
from aspen_gossip.events import (
    DispatchLazyPush,
    EmitEvent,
    EvictCache,
    OutEvent,
    PeerId,
    Received,
    ScheduleTimer,
    SendGraft,
    SendMessage,
    Timer,
)
from aspen_gossip.messages import (
    MAX_IHAVE_ENTRIES,
    MAX_ROUND,
    SCOPE_NEIGHBORS,
    SCOPE_SWARM,
    Gossip,
    GossipMessage,
    Graft,
    IHave,
    IHaveEntry,
    Level,
    Prune,
    encoded_gossip_size,
)
from aspen_gossip.tree import AnchorTree

# Encoded IHaveEntry: fixarray(2) + bin8 header (2) + 32-byte id + uint16 round (3) = 38 bytes;
# an IHave frame adds its tag, array headers and list header (< 8 bytes).
IHAVE_ENTRY_ENCODED_SIZE = 38
IHAVE_FRAME_OVERHEAD = 8

_PRUNE = Prune()
_DISPATCH_TIMER = DispatchLazyPush()
_EVICT_TIMER = EvictCache()

# stats keys
STAT_DUPLICATE = "duplicate_payloads"
STAT_SPOOFED = "spoofed_message_id"
STAT_SEEN_DROPPED = "seen_ids_dropped_oldest"
STAT_CACHE_DROPPED = "cached_messages_dropped_oldest"
STAT_MISSING_DROPPED = "missing_ids_dropped"
STAT_LAZY_DROPPED = "lazy_queue_dropped_oldest"
STAT_GRAFT_MISS = "graft_for_uncached_message"
STAT_DUPLICATE_PUBLISH = "duplicate_publish"
STAT_HELD = "off_tree_payloads_held"
STAT_HELD_RELEASED = "held_payloads_pushed_on_tree_copy"
STAT_HELD_DROPPED = "held_ids_dropped_oldest"


class Plumtree:
    """Broadcast state of one topic. Driven by `aspen_gossip.topic.Topic`."""

    def __init__(self, me: PeerId, config: GossipConfig, *, stats: Counter[str]) -> None:
        config.validate()
        self.me = me
        self.config = config
        self.stats = stats
        # insertion-ordered dicts used as sets: iteration order must not depend on the per-process
        # hash seed, or a simulation seed would not replay in another process
        self._eager: dict[PeerId, None] = {}
        self._lazy: dict[PeerId, None] = {}
        # seen ids: id -> expiry; `_seen_order` holds (expiry, id) in insertion (= expiry) order
        self._seen: dict[bytes, int] = {}
        self._seen_order: deque[tuple[int, bytes]] = deque()
        # payload cache for Graft replies
        self._cache: dict[bytes, bytes] = {}
        self._cache_order: deque[tuple[int, bytes]] = deque()
        self._cached_bytes = 0
        # ids announced by IHave but not received: id -> [(announcer, round), ...] not yet grafted
        self._missing: dict[bytes, list[tuple[PeerId, int]]] = {}
        self._lazy_queue: dict[PeerId, deque[IHaveEntry]] = {}
        # ids first delivered off the tree and only announced onwards (see _on_gossip) -> the
        # round they came at; a later copy over a tree link is pushed eagerly at the lower of the
        # two rounds. Insertion-ordered, <= MAX_HELD_IDS.
        self._held: dict[bytes, int] = {}
        self._dispatch_scheduled = False
        self._evict_scheduled = False
        self.tree = AnchorTree(me)
        self._ihave_per_frame = min(MAX_IHAVE_ENTRIES, (config.max_message_size - IHAVE_FRAME_OVERHEAD)
                                    // IHAVE_ENTRY_ENCODED_SIZE)

    # --- read-only views (tests, status pages) ----------------------------------------------

    @property
    def eager(self) -> set[PeerId]:
        return set(self._eager)

    @property
    def lazy(self) -> set[PeerId]:
        return set(self._lazy)

    def has_seen(self, message_id: bytes) -> bool:
        return message_id in self._seen

    def is_cached(self, message_id: bytes) -> bool:
        return message_id in self._cache

    @property
    def seen_count(self) -> int:
        return len(self._seen)

    @property
    def cached_count(self) -> int:
        return len(self._cache)

    @property
    def missing_count(self) -> int:
        return len(self._missing)

    def max_content_size(self) -> int:
        """The largest content a publish accepts with the configured max_message_size."""
        limit = self.config.max_message_size
        size = limit
        while size > 0 and encoded_gossip_size(size, MAX_ROUND) > limit:
            size -= 1
        return size

    # --- neighbors --------------------------------------------------------------------------

    def neighbor_up(self, peer: PeerId, out: list[OutEvent]) -> None:
        """Plumtree §3.6: a new neighbor starts in the eager set, so that a node outside any
        tree still floods. A node already in a tree keeps the new link lazy until the Level
        frames place it: pushing meanwhile would deliver off the tree, at a higher hop count
        (seen in the simulation: HyParView replaces ~2 links a second among 1,000 nodes)."""
        tree = self.tree
        if tree.uplink is None and not tree.children():
            self._lazy.pop(peer, None)
            self._eager[peer] = None
        else:
            self._eager.pop(peer, None)
            self._lazy[peer] = None
        tree.neighbor_up(peer, out)

    def neighbor_down(self, peer: PeerId, out: list[OutEvent]) -> None:
        self._eager.pop(peer, None)
        self._lazy.pop(peer, None)
        self._lazy_queue.pop(peer, None)
        self.tree.neighbor_down(peer, out)
        self._follow_tree()

    def _follow_tree(self) -> None:
        """Eager = the anchor tree's links, lazy = every other neighbor that told us its place.
        No Prune is sent: the other end learns the same facts from the same Level frames."""
        tree = self.tree
        for peer in (*self._eager, *self._lazy):  # <= active view capacity
            if tree.is_tree_link(peer):
                self._make_eager(peer)
            elif tree.knows(peer):
                self._make_lazy(peer)

    def _is_neighbor(self, peer: PeerId) -> bool:
        return peer in self._eager or peer in self._lazy

    def _make_eager(self, peer: PeerId) -> None:
        self._lazy.pop(peer, None)
        self._eager[peer] = None

    def _make_lazy(self, peer: PeerId) -> None:
        if self._eager.pop(peer, 0) is None:  # was eager
            self._lazy[peer] = None

    # --- caches -----------------------------------------------------------------------------

    def _remember(self, message_id: bytes, content: bytes, now_ms: int, out: list[OutEvent]) -> None:
        config = self.config
        if len(self._seen) >= config.max_seen_ids:
            self._drop_oldest_seen()
            self.stats[STAT_SEEN_DROPPED] += 1
        expiry = now_ms + config.message_id_retention_ms
        self._seen[message_id] = expiry
        self._seen_order.append((expiry, message_id))
        size = len(content)
        if size <= config.max_cached_bytes:
            while self._cache and (len(self._cache) >= config.max_cached_messages
                                   or self._cached_bytes + size > config.max_cached_bytes):
                self._drop_oldest_cached()
                self.stats[STAT_CACHE_DROPPED] += 1
            self._cache[message_id] = content
            self._cached_bytes += size
            self._cache_order.append((now_ms + config.message_cache_retention_ms, message_id))
        if not self._evict_scheduled:
            self._evict_scheduled = True
            out.append(ScheduleTimer(now_ms + config.cache_evict_interval_ms, _EVICT_TIMER))

    def _drop_oldest_seen(self) -> None:
        _, message_id = self._seen_order.popleft()
        del self._seen[message_id]

    def _drop_oldest_cached(self) -> None:
        while self._cache_order:
            _, message_id = self._cache_order.popleft()
            content = self._cache.pop(message_id, None)
            if content is not None:
                self._cached_bytes -= len(content)
                return

    def _evict(self, now_ms: int, out: list[OutEvent]) -> None:
        while self._seen_order and self._seen_order[0][0] <= now_ms:
            self._drop_oldest_seen()
        while self._cache_order and self._cache_order[0][0] <= now_ms:
            _, message_id = self._cache_order.popleft()
            content = self._cache.pop(message_id, None)
            if content is not None:
                self._cached_bytes -= len(content)
        if self._seen:
            out.append(ScheduleTimer(now_ms + self.config.cache_evict_interval_ms, _EVICT_TIMER))
        else:
            self._evict_scheduled = False

    # --- broadcast --------------------------------------------------------------------------

    def broadcast(self, content: bytes, scope: int, now_ms: int, out: list[OutEvent]) -> bytes:
        """Publish `content`; returns its message id. Raises LimitExceeded when the encoded frame
        would exceed max_message_size (iroh-gossip #131: there it failed silently)."""
        limit = self.config.max_message_size
        size = encoded_gossip_size(len(content), MAX_ROUND)
        if size > limit:
            raise LimitExceeded("max_message_size", size, limit)
        if scope not in (SCOPE_SWARM, SCOPE_NEIGHBORS):
            raise UsageError(f"unknown broadcast scope {scope}")
        message_id = blake3.blake3(content).digest()
        if scope == SCOPE_NEIGHBORS:
            # one hop to every neighbor (iroh sends to eager peers only; a lazy neighbor is still a
            # neighbor, and announcements must reach a new one at once)
            frame = Gossip(message_id, content, 0, SCOPE_NEIGHBORS)
            for peer in (*self._eager, *self._lazy):
                out.append(SendMessage(peer, frame))
            return message_id
        if message_id in self._seen:
            # identical content = identical id: it collapses into the earlier message (iroh too)
            self.stats[STAT_DUPLICATE_PUBLISH] += 1
            return message_id
        self._remember(message_id, content, now_ms, out)
        self._push(message_id, content, 0, None, now_ms, out)
        return message_id

    def _push(self, message_id: bytes, content: bytes, round_: int, sender: PeerId | None, now_ms: int,
              out: list[OutEvent], *, eager: bool = True) -> None:
        """Payload to the eager peers and IHave to the lazy ones; with eager=False, IHave to all."""
        if eager:
            frame = Gossip(message_id, content, round_)
            for peer in self._eager:
                if peer != sender:
                    out.append(SendMessage(peer, frame))
        announce = self._lazy if eager else (*self._eager, *self._lazy)
        if announce:
            entry = IHaveEntry(message_id, round_)
            limit = self.config.max_lazy_queue_entries
            for peer in announce:
                if peer == sender:
                    continue
                queue = self._lazy_queue.get(peer)
                if queue is None:
                    queue = self._lazy_queue[peer] = deque()
                elif len(queue) >= limit:
                    queue.popleft()
                    self.stats[STAT_LAZY_DROPPED] += 1
                queue.append(entry)
            if self._lazy_queue and not self._dispatch_scheduled:
                self._dispatch_scheduled = True
                out.append(ScheduleTimer(now_ms + self.config.dispatch_timeout_ms, _DISPATCH_TIMER))

    # --- inputs -----------------------------------------------------------------------------

    def on_message(self, sender: PeerId, message: GossipMessage, now_ms: int, out: list[OutEvent]) -> None:
        """Handle a broadcast frame from the neighbor `sender`."""
        kind = type(message)
        if kind is Gossip:
            assert isinstance(message, Gossip)
            self._on_gossip(sender, message, now_ms, out)
        elif kind is IHave:
            assert isinstance(message, IHave)
            self._on_ihave(sender, message, now_ms, out)
        elif kind is Graft:
            assert isinstance(message, Graft)
            self._on_graft(sender, message, out)
        elif kind is Prune:
            if not self.tree.is_tree_link(sender):  # a tree link stays: Level frames settle it
                self._make_lazy(sender)
        elif kind is Level:
            assert isinstance(message, Level)
            self.tree.on_level(sender, message, out)
            self._follow_tree()

    def _on_gossip(self, sender: PeerId, message: Gossip, now_ms: int, out: list[OutEvent]) -> None:
        message_id = message.message_id
        if message.scope == SCOPE_NEIGHBORS:
            if blake3.blake3(message.content).digest() != message_id:
                self.stats[STAT_SPOOFED] += 1
                return
            out.append(EmitEvent(Received(message.content, message_id, sender, SCOPE_NEIGHBORS, message.round)))
            return
        if message_id in self._seen:
            self.stats[STAT_DUPLICATE] += 1
            if self.tree.is_tree_link(sender):
                # a tree link stays eager; the off-tree sender was pruned on arrival
                if message_id in self._held:
                    self._release(sender, message, out)
                return
            # paper §3.3: a duplicate turns the link lazy, both ways
            self._make_lazy(sender)
            out.append(SendMessage(sender, _PRUNE))  # even if lazy here: it still pushes to us
            return
        content = message.content
        if blake3.blake3(content).digest() != message_id:
            self.stats[STAT_SPOOFED] += 1
            return
        self._remember(message_id, content, now_ms, out)
        round_ = message.round
        out.append(EmitEvent(Received(content, message_id, sender, SCOPE_SWARM, round_)))
        tree = self.tree
        off_tree = tree.knows(sender) and not tree.is_tree_link(sender)
        if off_tree:
            # Delivered, but only announced onwards, tree links included: pushed, this copy would
            # feed our whole subtree at its (higher) round, and the deepest delivery of a
            # broadcast is what LDH measures. The tree's copy, when it comes, is pushed instead
            # (_release); if it never comes, the IHave lets our subtree Graft it from us.
            self._hold(message_id, round_)
            self._push(message_id, content, min(round_ + 1, MAX_ROUND), sender, now_ms, out, eager=False)
        else:
            # Push first, optimise after (as iroh does): a peer grafted by the optimisation below
            # already has the payload (it announced it) and must not get it pushed again.
            self._push(message_id, content, min(round_ + 1, MAX_ROUND), sender, now_ms, out)
        announcers = self._missing.pop(message_id, None)
        if tree.knows(sender):
            # The anchor tree, not arrival order, decides the links (§3.8 would pull the tree
            # toward each sender). An off-tree sender should not be pushing to us (a Level frame
            # in flight, or a Graft reply): make sure it stops. A faster off-tree path would
            # deliver at a higher hop count than the tree, and that is what LDH measures.
            if not tree.is_tree_link(sender):
                self._make_lazy(sender)
                out.append(SendMessage(sender, _PRUNE))
            return
        if announcers:
            # paper §3.8: a lazy path announced it many hops earlier: swap the links
            best_peer, best_round = min(announcers, key=lambda a: a[1])
            if (best_round < round_ and round_ - best_round >= self.config.optimization_threshold
                    and self._is_neighbor(best_peer)):
                self._make_eager(best_peer)
                out.append(SendMessage(best_peer, Graft(None, best_round)))
                self._make_lazy(sender)
                out.append(SendMessage(sender, _PRUNE))
                return
        self._make_eager(sender)

    def _hold(self, message_id: bytes, round_: int) -> None:
        held = self._held
        if len(held) >= MAX_HELD_IDS:
            del held[next(iter(held))]
            self.stats[STAT_HELD_DROPPED] += 1
        held[message_id] = round_
        self.stats[STAT_HELD] += 1

    def _release(self, sender: PeerId, message: Gossip, out: list[OutEvent]) -> None:
        """The tree's copy of a held id: push it on to the tree links. Its round is the lower of
        the two copies': our hop count is that of the first copy, or of this one if it is lower."""
        if blake3.blake3(message.content).digest() != message.message_id:
            self.stats[STAT_SPOOFED] += 1
            return
        held_round = self._held.pop(message.message_id)
        self.stats[STAT_HELD_RELEASED] += 1
        round_ = min(held_round, message.round)
        frame = Gossip(message.message_id, message.content, min(round_ + 1, MAX_ROUND))
        for peer in self._eager:
            if peer != sender:
                out.append(SendMessage(peer, frame))

    def _on_ihave(self, sender: PeerId, message: IHave, now_ms: int, out: list[OutEvent]) -> None:
        seen = self._seen
        missing = self._missing
        for entry in message.entries:
            message_id = entry.message_id
            if message_id in seen:
                continue
            announcers = missing.get(message_id)
            if announcers is None:
                if len(missing) >= self.config.max_missing_ids:
                    self.stats[STAT_MISSING_DROPPED] += 1
                    continue
                missing[message_id] = [(sender, entry.round)]
                out.append(ScheduleTimer(now_ms + self.config.graft_timeout_1_ms, SendGraft(message_id)))
            elif len(announcers) < MAX_ANNOUNCERS_PER_ID:
                announcers.append((sender, entry.round))

    def _on_graft(self, sender: PeerId, message: Graft, out: list[OutEvent]) -> None:
        if not self.tree.knows(sender):
            self._make_eager(sender)
        # else: a repair of one message; the anchor tree alone decides which links stay eager
        if message.message_id is None:
            return
        content = self._cache.get(message.message_id)
        if content is None:
            self.stats[STAT_GRAFT_MISS] += 1
            return
        out.append(SendMessage(sender, Gossip(message.message_id, content, message.round)))

    def on_timer(self, timer: Timer, now_ms: int, out: list[OutEvent]) -> None:
        kind = type(timer)
        if kind is DispatchLazyPush:
            self._dispatch(out)
        elif kind is SendGraft:
            assert isinstance(timer, SendGraft)
            self._send_graft(timer.message_id, now_ms, out)
        elif kind is EvictCache:
            self._evict(now_ms, out)

    def _dispatch(self, out: list[OutEvent]) -> None:
        self._dispatch_scheduled = False
        per_frame = self._ihave_per_frame
        for peer, queue in self._lazy_queue.items():
            entries = list(queue)
            for start in range(0, len(entries), per_frame):
                out.append(SendMessage(peer, IHave(entries[start:start + per_frame])))
        self._lazy_queue.clear()

    def _send_graft(self, message_id: bytes, now_ms: int, out: list[OutEvent]) -> None:
        announcers = self._missing.get(message_id)
        if announcers is None:
            return  # arrived meanwhile
        while announcers:  # <= MAX_ANNOUNCERS_PER_ID
            # the announcer nearest the source first (the earliest on a tie): its round becomes
            # ours and our subtree's, so a far one would deepen the whole subtree (LDH)
            peer, round_ = announcers.pop(min(range(len(announcers)), key=lambda i: announcers[i][1]))
            if self._is_neighbor(peer):
                if not self.tree.knows(peer):
                    self._make_eager(peer)
                out.append(SendMessage(peer, Graft(message_id, round_)))
                # keep the entry: the payload may still come; try the next announcer later
                out.append(ScheduleTimer(now_ms + self.config.graft_timeout_2_ms, SendGraft(message_id)))
                return
        del self._missing[message_id]  # every announcer tried (or gone)


__all__ = ["Plumtree", "IHAVE_ENTRY_ENCODED_SIZE"]
