"""How Aspen starts its own Python child processes (node, worker, test server).

`python -P -m MODULE`: `-m` alone puts the current directory first on the child's sys.path, so a
user who runs `aspen demo` from a source checkout (the README's quick start: clone, cd,
`pip install .`) got the checkout's `aspen/` package, which has no compiled `_ring` extension,
instead of the installed one, and every node failed to start. `-P` (Python 3.11+) leaves the
current directory out; PYTHONPATH still applies.
"""

from __future__ import annotations

import sys


def python_module_command(module: str) -> list[str]:
    """argv that runs `module` (`python -m`) in this interpreter, importing installed code."""
    return [sys.executable, "-P", "-m", module]


__all__ = ["python_module_command"]
