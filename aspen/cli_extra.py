"""Subcommands that live in their own modules register themselves on import."""

from __future__ import annotations

import aspen.client_cli  # noqa: F401  (registers `aspen kv`, `aspen cluster`)
import aspen.demo  # noqa: F401  (registers `aspen demo`)
import aspen.smoke  # noqa: F401  (registers `aspen smoke`)
import aspen.ticket_cli  # noqa: F401  (registers `aspen ticket`)
