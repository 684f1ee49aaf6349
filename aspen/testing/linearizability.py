"""A linearizability checker for histories of KV operations (Wing & Gong search, Porcupine-style).

Given a history of client operations against the KV store (each with a call time, a return
time or None, the command and the observed result), `check_history` decides whether some total
order of the operations (1) respects real time — an operation that returned before another was
called comes first — and (2) replays on a sequential KV model to exactly the observed results.

Theory of operation:

- **Search.** The algorithm of Wing & Gong (1993) with Lowe's memoization (2017), as Porcupine
  implements it: events (calls and returns) sit in a doubly linked list in time order; the search
  repeatedly tries to linearize a call that is not preceded by any pending return, lifting the
  operation out of the list, and backtracks when it meets a return whose operation it could not
  place. A cache of (set of linearized operations as a bitmask, model state) prunes states
  already explored, which makes typical histories near-linear.
- **Time.** Times are integer milliseconds; intervals that touch (`a.return_ms == b.call_ms`)
  count as concurrent, since a millisecond clock cannot order them (lenient: no false alarms).
- **Unknown outcomes.** `return_ms=None` means the client got no answer: the operation may have
  taken effect at any time after its call, or never. It is given an infinite return time and
  need not be linearized at all (the search succeeds once every *completed* operation is placed;
  placing a pending one last is the same as never). `output=None` with a `return_ms` means the
  operation completed but its result was not recorded: it must take effect within its interval,
  and any result is accepted. Operations whose result is `Rejected` had no effect and are
  dropped before the search.
- **P-compositionality** (Herlihy & Wing: linearizability is local). Operations are partitioned
  into independent components with a union-find over keys: Get/Set/Delete/CompareAndSwap touch
  one key; SetMulti joins all its keys; a Scan joins every key of the history that its prefix
  covers (so `Scan(prefix="")` merges the whole history into one search, still correct, just
  slower). Each component is searched alone, which is exact because no operation spans two
  components. A Scan whose prefix covers no key forms a component with an empty store.
- **Bounded.** One step budget (`max_steps`, default MAX_CHECK_STEPS) shared by all components;
  running out gives `timed_out=True` (and `ok=False`: no verdict) instead of running forever.
  Histories are bounded by MAX_HISTORY_OPERATIONS.

A failure explains itself: the component's keys, the longest linearizable order found, the model
state after it, and the operation that could not come next with what the model expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aspen.errors import LimitExceeded, UsageError
from aspen.raft.kv import (
    AlreadyApplied,
    CasResult,
    CompareAndSwap,
    Delete,
    Get,
    GetResult,
    KvCommand,
    KvResult,
    NoOp,
    Rejected,
    Scan,
    Set,
    SetMulti,
    WriteResult,
    scan_page,
)

# Search steps before giving up. Measured: ~250,000 steps/s in CPython on the dev machine, so
# this is under 10 s; a hopeless 14-way concurrent write burst needs 860,000 steps.
MAX_CHECK_STEPS = 2_000_000
# Operations in one history (the bitmask of a component grows with its size). guess: revisit.
MAX_HISTORY_OPERATIONS = 100_000
# Operations listed in an explanation (the rest are counted).
MAX_EXPLAINED_OPERATIONS = 20
# Re-checks spent shrinking a failing component to a minimal failing history (each removes one
# operation if the rest still fails; delta debugging's one-at-a-time pass). guess: revisit.
MAX_MINIMIZE_CHECKS = 200

_INFINITE_MS = float("inf")
_State = tuple[str | None, ...]


@dataclass(frozen=True)
class Operation:
    """One client operation as observed from outside.

    `return_ms=None`: no response (it may or may not have taken effect; `output` is ignored).
    `output=None` with a `return_ms`: completed, result not recorded (any result is accepted).
    """

    client_id: int
    call_ms: int
    return_ms: int | None
    input: KvCommand
    output: KvResult | None = None

    def describe(self) -> str:
        until = "no response" if self.return_ms is None else f"{self.return_ms}"
        return (f"client {self.client_id} [{self.call_ms}, {until}] "
                f"{self.input!r} -> {self.output!r}")


@dataclass(frozen=True)
class CheckResult:
    """The verdict. `ok` is meaningful only when `timed_out` is False.

    For a failure: `failing_keys` and `failing_ops` describe the smallest independent component
    that is not linearizable, `longest_order` the longest order of its operations that the
    search could justify, and `stuck_op` an operation that could not be placed after it.
    `minimal_ops` is a subset of `failing_ops` that is still not linearizable and from which no
    single operation can be removed (when the shrinking budget allowed finishing; else smaller
    but maybe not minimal).
    """

    ok: bool
    timed_out: bool
    steps: int
    explanation: str = ""
    failing_keys: tuple[str, ...] = ()
    failing_ops: tuple[Operation, ...] = ()
    longest_order: tuple[Operation, ...] = ()
    stuck_op: Operation | None = None
    components: int = 0
    minimal_ops: tuple[Operation, ...] = ()


@dataclass
class _Component:
    keys: list[str]
    ops: list[Operation] = field(default_factory=list)


def _op_keys(command: KvCommand) -> list[str]:
    match command:
        case Set(key=key) | Delete(key=key) | Get(key=key) | CompareAndSwap(key=key):
            return [key]
        case SetMulti(pairs=pairs):
            return [key for key, _value in pairs]
        case _:
            return []


def _partition(ops: list[Operation]) -> list[_Component]:
    """Independent components (union-find over keys; see the module doc)."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:
            parent[key], key = root, parent[key]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for op in ops:
        for key in _op_keys(op.input):
            parent.setdefault(key, key)
    all_keys = sorted(parent)
    scan_keys: list[list[str]] = []
    for op in ops:
        keys = _op_keys(op.input)
        if isinstance(op.input, Scan):
            prefix = op.input.prefix
            keys = [k for k in all_keys if k.startswith(prefix)]
            scan_keys.append(keys)
        for other in keys[1:]:
            union(keys[0], other)
    by_root: dict[str, _Component] = {}
    for key in all_keys:
        by_root.setdefault(find(key), _Component(keys=[])).keys.append(key)
    lonely: list[_Component] = []
    scans = iter(scan_keys)
    for op in ops:
        keys = next(scans) if isinstance(op.input, Scan) else _op_keys(op.input)
        if keys:
            by_root[find(keys[0])].ops.append(op)
        else:  # a Scan that covers no key of the history sees an empty store
            lonely.append(_Component(keys=[], ops=[op]))
    return [c for c in by_root.values() if c.ops] + lonely


class _Model:
    """The sequential KV restricted to one component's keys; state = tuple of values by key."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.slot = {key: i for i, key in enumerate(keys)}
        self.initial: _State = (None,) * len(keys)

    def step(self, state: _State, command: KvCommand) -> tuple[KvResult, _State]:
        slot = self.slot
        match command:
            case Set(key=key, value=value):
                i = slot[key]
                return WriteResult(previous=state[i]), state[:i] + (value,) + state[i + 1:]
            case Delete(key=key):
                i = slot[key]
                return WriteResult(previous=state[i]), state[:i] + (None,) + state[i + 1:]
            case SetMulti(pairs=pairs):
                values = list(state)
                for key, value in pairs:
                    values[slot[key]] = value
                return WriteResult(), tuple(values)
            case CompareAndSwap(key=key, expected=expected, new=new):
                i = slot[key]
                if state[i] != expected:
                    return CasResult(succeeded=False, current=state[i]), state
                return CasResult(succeeded=True, current=new), state[:i] + (new,) + state[i + 1:]
            case Get(key=key):
                return GetResult(value=state[slot[key]]), state
            case Scan():
                items = ((k, v) for k, v in zip(self.keys, state) if v is not None)
                return scan_page(items, command), state
            case _:
                raise UsageError(f"not a KV command: {command!r}")

    def describe(self, state: _State) -> str:
        present = {k: v for k, v in zip(self.keys, state) if v is not None}
        return repr(present)


@dataclass
class _Outcome:
    ok: bool
    timed_out: bool
    steps: int
    best: list[int] = field(default_factory=list)


def _search(ops: list[Operation], model: _Model, max_steps: int) -> _Outcome:
    """Wing & Gong / Lowe search over one component. Node 0 is the head sentinel; operation i
    has call node 2i+1 and return node 2i+2."""
    events: list[tuple[float, int, int]] = []  # (time, 0 = call / 1 = return, node)
    completed = 0
    for i, op in enumerate(ops):
        events.append((op.call_ms, 0, 2 * i + 1))
        if op.return_ms is None:
            events.append((_INFINITE_MS, 1, 2 * i + 2))
        else:
            events.append((op.return_ms, 1, 2 * i + 2))
            completed += 1
    events.sort()
    size = 2 * len(ops) + 1
    nxt = [-1] * size
    prv = [-1] * size
    previous = 0
    for _time, _kind, node in events:
        nxt[previous] = node
        prv[node] = previous
        previous = node

    def lift(call: int) -> None:
        for node in (call, call + 1):
            nxt[prv[node]] = nxt[node]
            if nxt[node] != -1:
                prv[nxt[node]] = prv[node]

    def unlift(call: int) -> None:
        for node in (call + 1, call):
            nxt[prv[node]] = node
            if nxt[node] != -1:
                prv[nxt[node]] = node

    state = model.initial
    linearized = 0
    stack: list[tuple[int, _State]] = []
    cache: set[tuple[int, _State]] = set()
    remaining = completed
    best: list[int] = []
    steps = 0
    entry = nxt[0]
    while remaining:
        steps += 1
        if steps > max_steps:
            return _Outcome(ok=False, timed_out=True, steps=steps, best=best)
        if entry != -1 and entry % 2 == 1:  # a call: try to linearize its operation here
            i = entry // 2
            op = ops[i]
            result, new_state = model.step(state, op.input)
            if op.return_ms is None or op.output is None or result == op.output:
                mask = linearized | (1 << i)
                if (mask, new_state) not in cache:
                    cache.add((mask, new_state))
                    stack.append((entry, state))
                    state, linearized = new_state, mask
                    if op.return_ms is not None:
                        remaining -= 1
                    lift(entry)
                    if len(stack) > len(best):
                        best = [call // 2 for call, _ in stack]
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:  # a return of an operation not yet placed: undo the last choice
            if not stack:
                return _Outcome(ok=False, timed_out=False, steps=steps, best=best)
            call, state = stack.pop()
            i = call // 2
            linearized &= ~(1 << i)
            if ops[i].return_ms is not None:
                remaining += 1
            unlift(call)
            entry = nxt[call]
    return _Outcome(ok=True, timed_out=False, steps=steps)


def _explain(component: _Component, model: _Model, best: list[int]) -> tuple[str, Operation | None]:
    ops = component.ops
    state = model.initial
    for i in best:
        state = model.step(state, ops[i].input)[1]
    placed = set(best)
    rest = [ops[i] for i in range(len(ops)) if i not in placed and ops[i].return_ms is not None]
    stuck = min(rest, key=lambda op: (op.return_ms or 0, op.call_ms)) if rest else None
    lines = [f"not linearizable: keys {component.keys[:MAX_EXPLAINED_OPERATIONS]!r}, "
             f"{len(ops)} operations; the longest valid order places {len(best)}:"]
    shown = best[-MAX_EXPLAINED_OPERATIONS:]
    if len(best) > len(shown):
        lines.append(f"  ... {len(best) - len(shown)} earlier operations")
    lines += [f"  {ops[i].describe()}" for i in shown]
    lines.append(f"model state after it: {model.describe(state)}")
    if stuck is not None:
        expected = model.step(state, stuck.input)[0]
        lines.append(f"cannot place next: {stuck.describe()}")
        lines.append(f"  (here the model would answer {expected!r}; every other order also fails)")
    return "\n".join(lines), stuck


def _minimize(ops: list[Operation], model: _Model, steps: int,
              max_steps: int) -> tuple[list[Operation], int]:
    """Drop operations one at a time while the rest stays (definitely) not linearizable.

    Removing an operation only removes constraints and effects, so what remains is still a
    valid history to judge; the model keeps every key (an unused key stays absent).
    """
    current = list(ops)
    checks = 0
    shrunk = True
    while shrunk:  # passes until no single removal keeps it failing (1-minimal)
        shrunk = False
        i = len(current) - 1
        while i >= 0:
            if checks >= MAX_MINIMIZE_CHECKS or steps >= max_steps:
                return current, steps
            candidate = current[:i] + current[i + 1:]
            outcome = _search(candidate, model, max_steps - steps)
            steps += outcome.steps
            checks += 1
            if not outcome.ok and not outcome.timed_out:
                current = candidate
                shrunk = True
            i -= 1
    return current, steps


def check_history(ops: Sequence[Operation], *, max_steps: int = MAX_CHECK_STEPS) -> CheckResult:
    """Decide whether `ops` is linearizable against the KV model (see the module doc).

    Raises UsageError for a malformed history (return before call) and LimitExceeded over
    MAX_HISTORY_OPERATIONS. Never runs more than `max_steps` search steps in total.
    """
    if len(ops) > MAX_HISTORY_OPERATIONS:
        raise LimitExceeded("MAX_HISTORY_OPERATIONS", len(ops), MAX_HISTORY_OPERATIONS)
    kept: list[Operation] = []
    for op in ops:
        if op.return_ms is not None and op.return_ms < op.call_ms:
            raise UsageError(f"operation returns before it is called: {op.describe()}")
        if isinstance(op.output, (Rejected, NoOp, AlreadyApplied)):
            continue  # no effect on the store
        kept.append(op)
    components = _partition(kept)
    # Small components first: a failure in one is found before a big one eats the budget.
    components.sort(key=lambda c: len(c.ops))
    steps = 0
    timed_out = False
    for component in components:
        model = _Model(component.keys)
        outcome = _search(component.ops, model, max_steps - steps)
        steps += outcome.steps
        if outcome.timed_out:
            timed_out = True
            break
        if not outcome.ok:
            explanation, stuck = _explain(component, model, outcome.best)
            minimal, steps = _minimize(component.ops, model, steps, max_steps)
            explanation += "\nminimal failing history:\n" + "\n".join(
                f"  {op.describe()}" for op in minimal[:MAX_EXPLAINED_OPERATIONS])
            return CheckResult(ok=False, timed_out=False, steps=steps, explanation=explanation,
                               failing_keys=tuple(component.keys),
                               failing_ops=tuple(component.ops),
                               longest_order=tuple(component.ops[i] for i in outcome.best),
                               stuck_op=stuck, components=len(components),
                               minimal_ops=tuple(minimal))
    if timed_out:
        return CheckResult(ok=False, timed_out=True, steps=steps,
                           explanation=f"no verdict: the step budget ({max_steps}) ran out",
                           components=len(components))
    return CheckResult(ok=True, timed_out=False, steps=steps, components=len(components))


__all__ = [
    "MAX_CHECK_STEPS",
    "MAX_HISTORY_OPERATIONS",
    "Operation",
    "CheckResult",
    "check_history",
]
