"""Size units, so limits read as `10 * MiB` rather than a bare number."""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

__all__ = ["KiB", "MiB", "GiB"]
