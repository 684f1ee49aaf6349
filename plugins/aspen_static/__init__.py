"""aspen_static: static peers from configuration.

Reads `peers` (`--peers NODE_ID@ENDPOINT_ID`, `NODE_ID@{EndpointAddr JSON}`, env `ASPEN_PEERS`,
TOML `peers = [...]`) and puts them into the node's peer map at start-up. Copy this package as
the template of a discovery plugin.

Hooks: aspen_plugin_info, aspen_discovery_sources. Config keys: none of its own (uses `peers`).
"""

__all__: list[str] = []
