"""Hookimpls of aspen_static (the entry point)."""

from __future__ import annotations

import aspen
from aspen.plugin_api import DiscoverySource, NodeContext, PluginInfo

from aspen_static.source import StaticPeers


@aspen.hookimpl
def aspen_plugin_info() -> PluginInfo:
    return PluginInfo(kind="discovery", description="static peers from --peers / ASPEN_PEERS / config file")


@aspen.hookimpl
def aspen_discovery_sources(node: NodeContext) -> list[DiscoverySource]:
    return [StaticPeers(list(node.config.peers), node.peers)]
