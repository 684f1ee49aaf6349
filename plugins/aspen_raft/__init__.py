"""aspen_raft: the `raft-rpc` protocol — Raft messages between nodes over key-authenticated QUIC.

Carries the worker's outbound Raft messages to their peers and delivers inbound ones to the
worker, on pooled QUIC connections (ALPN `raft-rpc`, as in the Rust Aspen). Small messages
(heartbeats, votes, small appends) and large ones (snapshot chunks, big appends) use separate
streams, so a heartbeat never waits behind a 10 MiB chunk. Only members (voters or learners) of
this cluster are accepted once it is initialised; before that, a joining node accepts peers
whose node id does not contradict its peer map.

Hooks: aspen_plugin_info, aspen_protocol_handlers, aspen_services. Config keys: none.
"""

__all__: list[str] = []
