"""Aspen: a distributed orchestration node — Raft KV over iroh-style, key-authenticated QUIC.

Plugins import only what this package exports (see `__all__`).
"""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("aspen")

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
