"""Shared output for perf/ scripts: a table on stdout and, with --json PATH, the same figures.

Every benchmark measures its baseline in the same run (the machine is shared and noisy, so only
ratios are comparable across runs). JSON is a list of {name, unit, value, baseline, ratio}.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One measured figure. `baseline` is the same figure for the comparison system, if any."""

    name: str
    unit: str
    value: float
    baseline: float | None = None
    baseline_name: str = "baseline"

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", default=None, help="also write figures as JSON")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def emit(title: str, rows: list[Row], json_path: str | None) -> None:
    """Print `rows` as a table under `title`; write them as JSON to `json_path` if given."""
    headers = ["name", "unit", "value", "baseline", "ratio"]
    table = [[r.name, r.unit, _fmt(r.value),
              _fmt(r.baseline) + (f" ({r.baseline_name})" if r.baseline is not None else ""),
              (f"{r.ratio:.2f}x" if r.ratio is not None else "-")] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h)
              for i, h in enumerate(headers)]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if json_path:
        payload = [{"name": r.name, "unit": r.unit, "value": r.value, "baseline": r.baseline,
                    "ratio": r.ratio} for r in rows]
        with open(json_path, "w") as fh:
            json.dump(payload, fh, indent=2)
