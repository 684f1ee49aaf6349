"""keep_heap_top: bursts of ~65 KB objects (one per large datagram) stop faulting pages in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aspen.quic.allocator import keep_heap_top

REPO = Path(__file__).resolve().parents[3]
BURSTS = 200
# Each burst allocates and frees 40 datagram-sized objects (2.6 MB): untuned glibc returns the
# heap top to the kernel after each burst and faults it back in (measured: ~85,000 faults).
PROBE = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
from aspen.quic.allocator import keep_heap_top
assert keep_heap_top() and keep_heap_top()
def burst():
    blocks = [bytes(65_000) for _ in range(40)]
    del blocks
burst()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({BURSTS}):
    burst()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_datagram_sized_bursts_reuse_the_heap_instead_of_faulting() -> None:
    if not keep_heap_top():
        pytest.skip("not glibc: no mallopt")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         check=True)
    faults = int(out.stdout.strip())
    assert faults < BURSTS, f"{faults} page faults for {BURSTS} bursts"
