"""Subcommands that live in their own modules register themselves on import."""

from __future__ import annotations

import aspen.client_cli  # noqa: F401  (registers `aspen kv`, `aspen cluster`)
import aspen.demo  # noqa: F401  (registers `aspen demo`)
import aspen.smoke  # noqa: F401  (registers `aspen smoke`)
import aspen.ticket_cli  # noqa: F401  (registers `aspen ticket`)

from aspen.cli import register_command  # noqa: E402


def _ping(argv: list[str]) -> int:
    from aspen.quic.ping import cmd_ping  # aioquic is heavy: only `aspen ping` pays for it

    return cmd_ping(argv)


register_command("ping", _ping, "round trips to a node over the echo protocol (ENDPOINT_ID@HOST:PORT)")
