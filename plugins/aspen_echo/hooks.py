"""The echo plugin's hookimpls (its entry point: `echo = "aspen_echo.hooks"`)."""

from __future__ import annotations

import aspen
from aspen.plugin_api import NodeContext, PluginInfo, ProtocolHandler
from aspen_echo.handler import EchoHandler


@aspen.hookimpl
def aspen_plugin_info() -> PluginInfo:
    return PluginInfo(kind="protocol", description="echo protocol (aspen-echo/1) for aspen ping and tests")


@aspen.hookimpl
def aspen_protocol_handlers(node: NodeContext) -> list[ProtocolHandler]:
    return [EchoHandler()]
