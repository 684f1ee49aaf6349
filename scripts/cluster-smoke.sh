#!/usr/bin/env bash
# The Rust Aspen's 5-node cluster smoke flow, with its promised failover, every step asserted.
# Usage: scripts/cluster-smoke.sh [--data-dir DIR]   (needs `aspen` installed: pip install .)
set -euo pipefail
exec "${ASPEN:-aspen}" smoke "$@"
