"""STYLE.md rule 18: `mypy --strict` is clean over aspen/ and plugins/ — enforced here, so a
change that breaks the typed public surface fails CI instead of drifting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MYPY_TIMEOUT_S = 600  # a cold run on 2 busy cores takes about a minute


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "aspen", "plugins"], cwd=ROOT,
                            capture_output=True, text=True, timeout=MYPY_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-5000:]
