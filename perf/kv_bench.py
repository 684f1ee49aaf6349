"""Cluster KV throughput and latency over HTTP: a 3-node Aspen cluster vs a 3-member etcd.

Both systems run on loopback in the same run (both up; rows interleaved, the order alternating
row by row, so the shared machine's drift does not land in the ratios), durable (Aspen's disk storage fsyncs before it
acknowledges; etcd fsyncs its WAL), and are driven by the same aiohttp load generator: a fixed
number of concurrent workers, each sending one request at a time for a fixed duration after a
warm-up, 100-byte values, a distinct key per write, requests spread round-robin over the three
nodes (any node accepts writes and linearizable reads and forwards them to the leader, which
answers reads after a ReadIndex round). etcd is driven through its JSON gateway (grpc-gateway: POST
/v3/kv/put with base64 key/value, POST /v3/kv/range, serializable=false = linearizable).

Rows (value = Aspen, baseline = etcd when `etcd` is installed — Debian package etcd-server):
  writes c=N           writes/s at concurrency 1, 16, 64, with p50 and p99 latency (ms)
  lin reads c=N        linearizable reads/s of keys written before, at concurrency 16 and 64
  ... (leader only)    the same c=64 loads sent only to the leader
  ... CPU/op           user+system CPU ms of all the system's processes per operation (from
                       /proc/PID/stat): the figure least disturbed by a shared machine
  fsyncs/write c=N     leader fsyncs per acknowledged write (Aspen: /raft-metrics "fsyncs";
                       etcd: etcd_disk_wal_fsync_duration_seconds_count): below 1 = group commit;
                       "(all members)": every member's together (a follower syncs once per
                       append it receives, so this counts replication rounds like for like)

Reference measured on this kind of machine (3 etcd members, Python aiohttp load generator,
100-byte values): etcd ~880 writes/s at c=16, ~1,580 at c=64, p50 ~35 ms at c=64; linearizable
reads ~2,000/s at c=64. The machine is shared: compare ratios, not absolute numbers.

    .venv/bin/python perf/kv_bench.py [--duration-s 4] [--json out.json]
        [--nodes-only | --etcd-only] [--profile-dir DIR]

--profile-dir runs py-spy (.venv/bin/py-spy) on the Aspen leader's I/O process and its worker
process during the c=64 write load, saves the raw collapsed stacks there, and prints the top
functions by self and by cumulative samples for each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Row, add_json_argument, emit  # noqa: E402

import aiohttp  # noqa: E402
import msgspec  # noqa: E402

from aspen.localcluster import FAST_TIMING_ARGS, LocalCluster  # noqa: E402

VALUE_SIZE = 100  # the value size
NODES = 3
WRITE_CONCURRENCIES = (1, 16, 64)
READ_CONCURRENCIES = (16, 64)
DEFAULT_DURATION_S = 4.0  # per measured row; 14 rows + start-up stay within ~3 minutes
WARMUP_S = 1.0  # same load before each measured row, discarded
MAX_OPS_PER_ROW = 200_000  # bound on one row's requests (far above what 2 cores can do in a row)
MAX_READ_KEYS = 20_000  # keys kept from the write rows for the read rows
REQUEST_TIMEOUT_S = 15.0  # above Aspen's CLIENT_REQUEST_TIMEOUT_MS (10 s)
ETCD_READY_TIMEOUT_S = 30.0
ETCD_STOP_TIMEOUT_S = 10.0
PROFILE_RATE_HZ = 200  # py-spy samples per second
PROFILE_TOP = 15  # functions listed per profile summary
PY_SPY = Path(sys.executable).parent / "py-spy"

_JSON = msgspec.json.Encoder()
_HEADERS = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    ops: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Target:
    """How to talk to one system: builds request bodies and checks responses."""

    name = "?"

    def write(self, key: str, value: str) -> tuple[str, bytes]:
        raise NotImplementedError

    def read(self, key: str) -> tuple[str, bytes]:
        raise NotImplementedError

    def ok(self, status: int, body: bytes, is_read: bool) -> bool:
        return status == 200


class AspenTarget(Target):
    name = "aspen"

    def write(self, key: str, value: str) -> tuple[str, bytes]:
        return "/write", _JSON.encode({"command": {"Set": {"key": key, "value": value}}})

    def read(self, key: str) -> tuple[str, bytes]:
        return "/read", _JSON.encode({"key": key, "consistency": "linearizable"})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdTarget(Target):
    name = "etcd"

    def write(self, key: str, value: str) -> tuple[str, bytes]:
        return "/v3/kv/put", _JSON.encode({"key": _b64(key), "value": _b64(value)})

    def read(self, key: str) -> tuple[str, bytes]:
        return "/v3/kv/range", _JSON.encode({"key": _b64(key), "serializable": False})

    def ok(self, status: int, body: bytes, is_read: bool) -> bool:
        # A range of a missing key is 200 without "kvs": count it as an error, as Aspen's 404.
        return status == 200 and (not is_read or b'"kvs"' in body)


async def run_load(session: aiohttp.ClientSession, target: Target, urls: list[str], *, concurrency: int,
                   duration_s: float, is_read: bool, prefix: str, read_keys: list[str] | None = None,
                   keep_keys: bool = False) -> LoadResult:
    """`concurrency` workers, each one request at a time, round-robin over `urls`, for
    `duration_s` (or MAX_OPS_PER_ROW requests). Latency is request start to body read."""
    result = LoadResult()
    value = ("v" * VALUE_SIZE)
    counter = 0
    deadline = 0.0

    async def worker(wid: int) -> None:
        nonlocal counter
        n = 0
        while time.perf_counter() < deadline and counter < MAX_OPS_PER_ROW:
            seq = counter
            counter += 1
            url = urls[seq % len(urls)]
            if is_read:
                assert read_keys
                key = read_keys[seq % len(read_keys)]
                path, body = target.read(key)
            else:
                key = f"{prefix}/{wid:03d}/{n:07d}"
                path, body = target.write(key, value)
            n += 1
            started = time.perf_counter()
            try:
                async with session.post(url + path, data=body, headers=_HEADERS) as resp:
                    raw = await resp.read()
                    good = target.ok(resp.status, raw, is_read)
                    detail = f"{resp.status} {raw[:120]!r}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                good, detail = False, f"{type(exc).__name__}: {exc}"
            took = time.perf_counter() - started
            if good:
                result.ops += 1
                result.latencies_s.append(took)
                if keep_keys and len(result.keys) < MAX_READ_KEYS:
                    result.keys.append(key)
            else:
                result.errors += 1
                if len(result.error_samples) < 3:
                    result.error_samples.append(detail)

    deadline = time.perf_counter() + duration_s
    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------- systems under test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except OSError as exc:
        return 0, str(exc).encode()


def _post_json(url: str, body: Any, timeout_s: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=_HEADERS)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except OSError as exc:
        return 0, str(exc)


_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids` (threads included; gone pids count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / _CLOCK_TICKS_PER_S


class System:
    name = "?"
    target: Target
    urls: list[str]

    def pids(self) -> list[int]:
        """Every process of the system under test (for CPU per operation)."""
        raise NotImplementedError

    def leader_url(self) -> str:
        raise NotImplementedError

    def leader_fsyncs(self) -> int | None:
        raise NotImplementedError

    def all_fsyncs(self) -> int | None:
        """Log fsyncs of every member together (the followers' count one per append received)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class AspenSystem(System):
    name = "aspen"

    def __init__(self, base_dir: Path) -> None:
        self.target = AspenTarget()
        self.cluster = LocalCluster(base_dir, NODES,
                                    extra_args=(*FAST_TIMING_ARGS, "--storage-backend", "disk",
                                                "--log-level", "warning"))
        self.cluster.start()
        self.cluster.form(list(range(1, NODES + 1)))
        self.urls = [self.cluster.nodes[i].url for i in range(1, NODES + 1)]
        self._pids: list[int] = []

    def leader_id(self) -> int:
        return self.cluster.wait_leader(list(range(1, NODES + 1)))

    def leader_url(self) -> str:
        return self.cluster.nodes[self.leader_id()].url

    def leader_fsyncs(self) -> int | None:
        return self._fsyncs(self.leader_id())

    def all_fsyncs(self) -> int | None:
        counts = [self._fsyncs(i) for i in self.cluster.nodes]
        return None if None in counts else sum(c for c in counts if c is not None)

    def _fsyncs(self, node_id: int) -> int | None:
        status, body = self.cluster.nodes[node_id].call("GET", "/raft-metrics", timeout_s=5)
        return int(body["fsyncs"]) if status == 200 and "fsyncs" in body else None

    def pids(self) -> list[int]:
        if not self._pids:
            for node in self.cluster.nodes.values():
                assert node.proc is not None
                self._pids.append(node.proc.pid)
                worker = node.worker_pid()
                if worker:
                    self._pids.append(worker)
        return self._pids

    def leader_pids(self) -> tuple[int, int | None]:
        """(I/O process pid, worker process pid) of the leader."""
        node = self.cluster.nodes[self.leader_id()]
        assert node.proc is not None
        return node.proc.pid, node.worker_pid()

    def stop(self) -> None:
        self.cluster.stop()


class EtcdSystem(System):
    name = "etcd"

    def __init__(self, base_dir: Path, binary: str) -> None:
        self.target = EtcdTarget()
        self.procs: list[subprocess.Popen[bytes]] = []
        members = []
        for i in range(1, NODES + 1):
            members.append((f"e{i}", _free_port(), _free_port()))
        initial = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, _, peer in members)
        self.urls = [f"http://127.0.0.1:{client}" for _, client, _ in members]
        for name, client, peer in members:
            data_dir = base_dir / name
            data_dir.mkdir(parents=True)
            log = open(base_dir / f"{name}.log", "ab")
            self.procs.append(subprocess.Popen(
                [binary, "--name", name, "--data-dir", str(data_dir),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"kv-bench-{os.getpid()}",
                 "--logger", "zap", "--log-level", "warn"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL))
            log.close()
        deadline = time.monotonic() + ETCD_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"an etcd member exited; see {base_dir}/e*.log")
            if all(_get(u + "/health", 2)[1].find(b'"true"') >= 0 for u in self.urls):
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy within {ETCD_READY_TIMEOUT_S} s; see {base_dir}/e*.log")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def leader_url(self) -> str:
        for url in self.urls:
            status, body = _post_json(url + "/v3/maintenance/status", {})
            if status == 200 and isinstance(body, dict) and body.get("leader") == body["header"]["member_id"]:
                return url
        raise RuntimeError("no etcd member reports itself leader")

    def leader_fsyncs(self) -> int | None:
        return self._fsyncs(self.leader_url())

    def all_fsyncs(self) -> int | None:
        counts = [self._fsyncs(url) for url in self.urls]
        return None if None in counts else sum(c for c in counts if c is not None)

    @staticmethod
    def _fsyncs(url: str) -> int | None:
        status, raw = _get(url + "/metrics")
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("etcd_disk_wal_fsync_duration_seconds_count"):
                return int(float(line.split()[-1]))
        return None

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=ETCD_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ---------------------------------------------------------------------- profiling


class Profiler:
    """py-spy record on a set of pids for a fixed duration, raw (collapsed) output."""

    def __init__(self, out_dir: Path, pids: dict[str, int], duration_s: float) -> None:
        self.files = {label: out_dir / f"{label}.collapsed.txt" for label in pids}
        self.procs = [subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(max(1, int(duration_s))),
             "--rate", str(PROFILE_RATE_HZ), "--format", "raw", "--nonblocking", "--gil", "-o", str(self.files[label])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for label, pid in pids.items()]

    def wait(self) -> None:
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def summarize_profile(path: Path, duration_s: float, top: int = PROFILE_TOP) -> str:
    """Top functions by self and cumulative share of samples, from py-spy's raw output.

    Sampled with --gil (only the thread holding the GIL), so samples / (rate x duration) is
    roughly the share of time the process ran Python code. On an oversubscribed machine a
    thread preempted while holding the GIL still counts: compare with the CPU/op rows."""
    if not path.exists():
        return f"{path.name}: no profile written"
    self_counts: collections.Counter[str] = collections.Counter()
    cum_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        # thread name first, then frames "func (file:line)"; aggregate per function+file.
        frames = [_frame_key(f) for f in stack.split(";")[1:]]
        total += count
        if frames:
            self_counts[frames[-1]] += count
        for f in set(frames):
            cum_counts[f] += count
    busy = total / (PROFILE_RATE_HZ * max(1.0, float(int(duration_s))))
    lines = [f"{path.name}: {total} samples, holding the GIL ~{100 * busy:.0f}% of the {int(duration_s)} s"]
    for title, counts in (("self", self_counts), ("cumulative", cum_counts)):
        lines.append(f"  top {top} by {title}:")
        for name, count in counts.most_common(top):
            lines.append(f"    {100 * count / max(1, total):5.1f}%  {name}")
    return "\n".join(lines)


def _frame_key(frame: str) -> str:
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


# ---------------------------------------------------------------------- the run


@dataclass
class Measured:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_op: float
    fsyncs_per_write: float | None = None
    all_fsyncs_per_write: float | None = None


@dataclass(frozen=True)
class RowSpec:
    label: str
    concurrency: int
    is_read: bool
    leader_only: bool = False


ROWS = ([RowSpec(f"writes c={c}", c, False) for c in WRITE_CONCURRENCIES]
        + [RowSpec(f"lin reads c={c}", c, True) for c in READ_CONCURRENCIES]
        + [RowSpec("writes c=64 (leader only)", 64, False, True),
           RowSpec("lin reads c=64 (leader only)", 64, True, True)])


class Runner:
    """Measures one system row by row (its own HTTP session and the keys its writes made)."""

    def __init__(self, system: System, duration_s: float, profile: Callable[[], None] | None,
                 log: Callable[[str], None]) -> None:
        self.system = system
        self.duration_s = duration_s
        self.profile = profile
        self.log = log
        self.results: dict[str, Measured] = {}
        self.read_keys: list[str] = []
        self.run_id = f"b{os.getpid()}"
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        self.session = aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def row(self, spec: RowSpec) -> None:
        system, session = self.system, self.session
        assert session is not None
        label, is_read = spec.label, spec.is_read
        urls = [system.leader_url()] if spec.leader_only else system.urls
        hook = self.profile if label == "writes c=64" else None
        common = dict(concurrency=spec.concurrency, is_read=is_read, read_keys=self.read_keys)
        await run_load(session, system.target, urls, duration_s=WARMUP_S,
                       prefix=f"{self.run_id}/{label}/warm", **common)  # type: ignore[arg-type]
        fsyncs_before = None if is_read else system.leader_fsyncs()
        all_fsyncs_before = None if is_read else system.all_fsyncs()
        if hook is not None:
            hook()
        cpu_before = cpu_seconds(system.pids())
        res = await run_load(session, system.target, urls, duration_s=self.duration_s,
                             prefix=f"{self.run_id}/{label}", keep_keys=not is_read, **common)  # type: ignore[arg-type]
        cpu_ms = (cpu_seconds(system.pids()) - cpu_before) * 1000 / max(1, res.ops)
        m = Measured(res.rate, res.percentile_ms(0.50), res.percentile_ms(0.99), res.errors, cpu_ms)
        if fsyncs_before is not None and res.ops:
            after = system.leader_fsyncs()
            if after is not None:
                m.fsyncs_per_write = (after - fsyncs_before) / res.ops
        if all_fsyncs_before is not None and res.ops:
            all_after = system.all_fsyncs()
            if all_after is not None:
                m.all_fsyncs_per_write = (all_after - all_fsyncs_before) / res.ops
        if not is_read and len(self.read_keys) < MAX_READ_KEYS:
            self.read_keys.extend(res.keys[:MAX_READ_KEYS - len(self.read_keys)])
        self.results[label] = m
        extra = f", {m.fsyncs_per_write:.3f} fsyncs/write" if m.fsyncs_per_write is not None else ""
        self.log(f"  {system.name} {label}: {m.rate:,.0f}/s p50 {m.p50_ms:.1f} ms p99 {m.p99_ms:.1f} ms, "
                 f"{m.cpu_ms_per_op:.2f} CPU ms/op, {res.errors} errors{extra}"
                 + (f" e.g. {res.error_samples}" if res.error_samples else ""))


async def measure_interleaved(runners: list[Runner]) -> None:
    """Every row on every system back to back, the order alternating from row to row: the
    shared machine's speed drifts over minutes, and measuring one system's rows after the
    other's put that drift into the ratios (etcd c=16 ranged 1,085-1,334 writes/s across runs).
    The system not being measured stays up, idle."""
    for runner in runners:
        await runner.open()
    try:
        for n, spec in enumerate(ROWS):
            for runner in (runners if n % 2 == 0 else list(reversed(runners))):
                await runner.row(spec)
    finally:
        for runner in runners:
            await runner.close()


def build_rows(aspen: dict[str, Measured], etcd: dict[str, Measured] | None) -> list[Row]:
    rows: list[Row] = []
    labels = list(aspen) if aspen else list(etcd or {})
    for label in labels:
        a = aspen.get(label)
        e = (etcd or {}).get(label)
        unit = "reads/s" if "reads" in label else "writes/s"
        pick: list[tuple[str, str, Callable[[Measured], float | None]]] = [
            (label, unit, lambda m: m.rate),
            (f"{label} p50", "ms", lambda m: m.p50_ms),
            (f"{label} p99", "ms", lambda m: m.p99_ms),
            (f"{label} CPU/op (all nodes)", "ms", lambda m: m.cpu_ms_per_op)]
        if "writes" in label:
            pick.append((f"{label} leader fsyncs/write", "fsyncs", lambda m: m.fsyncs_per_write))
            pick.append((f"{label} fsyncs/write (all members)", "fsyncs", lambda m: m.all_fsyncs_per_write))
        for name, u, get in pick:
            value = get(a) if a is not None else None
            base = get(e) if e is not None else None
            if value is None and base is None:
                continue
            if a is None:  # --etcd-only: etcd figures in the value column
                rows.append(Row(name + " [etcd]", u, float(base or 0.0)))
            else:
                rows.append(Row(name, u, float(value or 0.0), base, "etcd"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=DEFAULT_DURATION_S, help="measured seconds per row")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--nodes-only", action="store_true", help="Aspen only (no etcd baseline)")
    which.add_argument("--etcd-only", action="store_true", help="etcd only (debugging the baseline)")
    parser.add_argument("--profile-dir", default=None,
                        help="py-spy the Aspen leader's I/O and worker processes during writes c=64")
    add_json_argument(parser)
    args = parser.parse_args()
    duration_s = min(max(0.5, args.duration_s), 60.0)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # SIGTERM unwinds like Ctrl-C, so the finally below stops every process. SIGINT is reset
    # too: a shell starts background jobs with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    etcd_binary = shutil.which("etcd")
    notes: list[str] = []
    base_dir = Path(tempfile.mkdtemp(prefix="aspen-kv-bench-"))
    systems: list[System] = []
    runners: list[Runner] = []
    aspen_res: dict[str, Measured] = {}
    etcd_res: dict[str, Measured] | None = None
    profile_text: list[str] = []
    holder: list[Profiler] = []
    try:
        if not args.etcd_only:
            log(f"starting {NODES} Aspen nodes under {base_dir} ...")
            aspen = AspenSystem(base_dir / "aspen")
            systems.append(aspen)
            profile_hook = None
            if args.profile_dir:
                prof_dir = Path(args.profile_dir)
                prof_dir.mkdir(parents=True, exist_ok=True)

                def profile_hook() -> None:
                    io_pid, worker_pid = aspen.leader_pids()
                    pids = {"leader-io": io_pid}
                    if worker_pid:
                        pids["leader-worker"] = worker_pid
                    log(f"  py-spy on {pids} for {duration_s:.0f} s")
                    holder.append(Profiler(prof_dir, pids, duration_s))

            runners.append(Runner(aspen, duration_s, profile_hook, log))
        if not args.nodes_only:
            if etcd_binary is None:
                notes.append("etcd not installed (Debian: apt-get install etcd-server): no baseline")
            else:
                log(f"starting a {NODES}-member etcd ({etcd_binary}) ...")
                etcd = EtcdSystem(base_dir / "etcd", etcd_binary)
                systems.append(etcd)
                runners.append(Runner(etcd, duration_s, None, log))
        asyncio.run(measure_interleaved(runners))
        for runner in runners:
            if runner.system.name == "etcd":
                etcd_res = runner.results
            else:
                aspen_res = runner.results
        for prof in holder:
            prof.wait()
            profile_text += [summarize_profile(f, duration_s) for f in prof.files.values()]
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        for system in systems:
            try:
                system.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {system.name}: {exc}")
        shutil.rmtree(base_dir, ignore_errors=True)

    rows = build_rows(aspen_res, etcd_res)
    version = ""
    if etcd_res is not None and etcd_binary:
        out = subprocess.run([etcd_binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        version = " vs etcd " + out.split("\n", 1)[0].split()[-1]
    emit(f"cluster KV over HTTP, {NODES} nodes on loopback, durable, {VALUE_SIZE}-byte values, "
         f"{duration_s:g} s per row{version}", rows, args.json)
    for note in notes:
        print(f"note: {note}")
    errors = {s: sum(m.errors for m in r.values()) for s, r in (("aspen", aspen_res), ("etcd", etcd_res or {}))}
    print(f"errors: {errors}")
    for text in profile_text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
