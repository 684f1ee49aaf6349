"""Start real `aspen run` processes and talk to them as a user would (HTTP, signals).

Every wait is bounded; `NodeProcess.cleanup()` kills whatever is left (the node and its worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aspen.localcluster import http, read_ready_line

READY_TIMEOUT_S = 60.0  # Python start-up of two processes on a loaded 2-core machine


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASPEN_")}
    env.update(extra or {})
    return env


def worker_pids_of(parent_pid: int) -> list[int]:
    """Live worker processes started by `parent_pid` (found by their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"aspen.worker_process" in argv and b"--parent-pid" in argv:
            idx = argv.index(b"--parent-pid")
            if idx + 1 < len(argv) and argv[idx + 1] == str(parent_pid).encode():
                try:
                    state = (entry / "stat").read_text().split()[2]
                except OSError:
                    continue
                if state != "Z":
                    found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def shm_entries_of(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"aspen-{pid}-")]


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


class NodeProcess:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.stderr_path = data_dir.parent / f"{data_dir.name}.stderr"
        self.args = ["--data-dir", str(data_dir), "--http-addr", "127.0.0.1:0", *args]
        self.env = clean_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    def start(self) -> NodeProcess:
        stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "aspen", "run", *self.args], stdout=subprocess.PIPE,
                                     stderr=stderr, env=self.env, stdin=subprocess.DEVNULL)
        stderr.close()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        assert self.proc is not None
        ready = read_ready_line(self.proc, timeout_s)
        if ready is None:
            raise AssertionError(f"node not ready (rc={self.proc.poll()}): {self.stderr()[-2000:]}")
        self.ready = ready
        return self.ready

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.ready['http_addr']}"

    def http(self, method: str, path: str, body: Any = None, timeout_s: float = 10.0) -> tuple[int, Any]:
        return http(self.base_url, method, path, body, timeout_s=timeout_s)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for wpid in worker_pids_of(pid):
            try:
                os.kill(wpid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
