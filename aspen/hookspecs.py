"""Every hook an Aspen plugin can implement, in one place (like pytest's hookspec.py).

A plugin is a module registered under the entry-point group "aspen.plugins"; the entry-point name
is the plugin's name (`aspen run --plugins NAME,...`). Hookimpls are synchronous and cheap: they
return objects that the host starts and supervises (no sockets, tasks or globals in the hook).
Hooks are called with keywords, so an impl may take fewer arguments than its spec.

Order at start-up: aspen_plugin_info (listing) -> aspen_config_options (before the config is
validated) -> aspen_protocol_handlers and aspen_transports (before the endpoint binds) ->
aspen_discovery_sources and aspen_services (started after the endpoint is up) ->
aspen_node_started. At shutdown: aspen_node_stopping, then services and sources stop in reverse.
"""

# mypy: disable-error-code="empty-body"
# (hookspecs have docstrings for bodies, like pytest's hookspec.py; pluggy never calls them)
from __future__ import annotations

import pluggy

from aspen.plugin_api import (
    ConfigOption,
    DatagramTransport,
    DiscoverySource,
    NodeContext,
    PluginInfo,
    ProtocolHandler,
    Service,
)

hookspec = pluggy.HookspecMarker("aspen")

# ---------------------------------------------------------------------------------------------
# identity and configuration


@hookspec(firstresult=True)
def aspen_plugin_info() -> PluginInfo:
    """Describe this plugin (kind and one-line description) for `aspen plugins`.

    The host calls it on each plugin module individually; every plugin should implement it.
    """


@hookspec
def aspen_config_options() -> list[ConfigOption]:
    """Return the config options this plugin adds. Called before the config is validated; values
    reach the plugin as `node.options_for(name)`."""


# ---------------------------------------------------------------------------------------------
# the three plugin kinds


@hookspec
def aspen_discovery_sources(node: NodeContext) -> list[DiscoverySource]:
    """Return discovery sources (publish our address, resolve peers, push found peers into
    `node.peers`). Started after the endpoint is up."""


@hookspec
def aspen_transports(node: NodeContext) -> list[DatagramTransport]:
    """Return datagram paths (direct UDP, relay) for the QUIC endpoint. Called before it binds."""


@hookspec
def aspen_protocol_handlers(node: NodeContext) -> list[ProtocolHandler]:
    """Return the ALPN handlers this plugin serves. Called once, before the endpoint binds; two
    plugins claiming one ALPN is a start-up error naming both."""


@hookspec
def aspen_services(node: NodeContext) -> list[Service]:
    """Return other long-running services (started after discovery, stopped before it)."""


# ---------------------------------------------------------------------------------------------
# lifecycle


@hookspec
def aspen_node_started(node: NodeContext) -> None:
    """The node is up: endpoint bound, worker running, services started."""


@hookspec
def aspen_node_stopping(node: NodeContext) -> None:
    """The node is about to stop; services are stopped right after this returns."""
