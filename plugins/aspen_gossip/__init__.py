"""aspen_gossip: topic membership and broadcast (HyParView + Plumtree), iroh-gossip style.

What it does
------------
Every node of a cluster joins one gossip topic, ``topic_id = blake3(cookie)``, through bootstrap
peers (a ticket, static peers, mDNS, ...). HyParView keeps each node connected to a few
neighbors (active view 5, passive view 30); Plumtree spreads each broadcast along a spanning
tree of those links, repairing it with lazy IHave/Graft. On top of it every node broadcasts a
signed discovery announcement ``{node_id, EndpointAddr, timestamp}`` at once on joining, to each
new neighbor, and every 10 s; verified announcements feed the peer map.

Only holders of the cluster secret take part: Join/Neighbor/ShuffleReply carry a keyed-blake3
tag from ``aspen.cluster_secret`` bound to sender and receiver ids (threat model there).

Modules (all sans-IO: time comes in as ``now_ms``, randomness as a ``random.Random``)
- ``topic.Topic``: the core; ``handle(InEvent, now_ms) -> list[OutEvent]``.
- ``hyparview``, ``plumtree``: the two protocols, driven by ``Topic``.
- ``events``: the closed unions InEvent / OutEvent / Event / Timer.
- ``messages``: the wire frames (msgspec), ``encode_frame`` / ``decode_frame``.
- ``announce``: signed announcements, their verifier, and the announcer schedule.
- ``config.GossipConfig``: tunables; defaults are named constants with their sources.
- ``sim``: the seeded discrete-event simulator (``perf/gossip_sim.py``, tests).

Adapters (asyncio): ``service.GossipService`` (the ``/aspen-gossip/1`` protocol handler: streams,
dials, timers, bounded subscriber queues; executes the core's outputs, see ``topic``) and
``discovery.GossipDiscovery`` (announces this node, verifies others' announcements into the peer
map, rejoins while alone, mints cluster tickets).

Hooks (``hooks.py``): aspen_plugin_info, aspen_config_options, aspen_protocol_handlers,
aspen_discovery_sources; all return nothing when ``enable_gossip`` is false. The node's
``extensions["cluster_ticket"]`` provider serves ``GET /cluster-ticket``.

Config keys exposed by the hooks (``[plugin.gossip]`` / ``--gossip-KEY`` / ``ASPEN_GOSSIP_KEY``):
max_message_size, announce_interval_ms, active_view_capacity, passive_view_capacity,
shuffle_interval_ms. ``GossipConfig`` itself has more tunables: active_view_capacity,
passive_view_capacity, active_random_walk_length, passive_random_walk_length,
shuffle_random_walk_length, shuffle_active_view_count, shuffle_passive_view_count,
shuffle_interval_ms, active_refresh_probability, neighbor_request_timeout_ms, join_timeout_ms,
graft_timeout_1_ms, graft_timeout_2_ms, dispatch_timeout_ms, optimization_threshold,
message_cache_retention_ms, message_id_retention_ms, cache_evict_interval_ms, max_message_size,
max_seen_ids, max_cached_messages, max_cached_bytes, max_missing_ids, max_lazy_queue_entries;
announce_interval_ms (``announce``).
"""

from __future__ import annotations

__all__: list[str] = []
