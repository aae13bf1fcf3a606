"""Baseline check: compare a profile result with a baseline and with byte budgets.

    report = compare_documents(current_doc, baseline_doc, tolerance=0.01, budgets={"state": 30 * 2**30})
    report.passed           # False when a metric regressed or a budget is exceeded
    check_table(report)     # a rich Table (metric, baseline, current, change, verdict)
    report_to_dict(report)  # plain data for --format json

Rules (DESIGN.md section 5, issue 6):

- runs are matched by (model, precision, device type, optimizer, implementation); two runs with the
  same key are matched in the order they appear;
- every memory metric (a ``*_bytes`` number) present in both runs is compared: growth beyond
  ``tolerance`` (a fraction, 0.01 = 1%) is a regression, shrinkage beyond it an improvement;
- latency (p50 of optimizer step, forward, backward) only when both results ran on the same device
  model (same device type and name, not meta); growth beyond ``tolerance_latency`` is a regression;
- a run that was ``ok`` in the baseline and is not ``ok`` now (oom, error) is a regression;
- budgets cap a current run's metric whatever the baseline says. Keys are memory field names without
  ``_bytes`` (see ``BUDGET_KEYS``) plus ``peak``: the largest peak figure the run has.

Nothing to compare (no run matched, or a budget no run can be measured against) is bad input
(``BadInput``, exit 2), never a silent pass. The environment and ``created_utc`` fields are not compared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sgdsai_cli.errors import BadInput, did_you_mean
from sgdsai_cli.units import parse_size

MEMORY_METRICS = (
    "state_bytes",
    "param_bytes",
    "grad_bytes",
    "activation_peak_bytes",
    "step_transient_bytes",
    "estimated_peak_bytes",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "nvml_used_peak_bytes",
)
PEAK_METRICS = ("peak_allocated_bytes", "peak_reserved_bytes", "nvml_used_peak_bytes", "estimated_peak_bytes")
LATENCY_PHASES = ("optimizer_step", "forward", "backward")
BUDGET_KEYS = (
    "state",
    "peak_allocated",
    "peak_reserved",
    "nvml_used_peak",
    "activation_peak",
    "step_transient",
    "estimated_peak",
    "param",
    "grad",
    "peak",
)

# verdicts
OK, REGRESSION, IMPROVED, OVER_BUDGET, WITHIN_BUDGET, MISSING, NEW, NOT_OK = (
    "ok", "regression", "improved", "over budget", "within budget", "missing", "new", "not ok",
)
FAILING = (REGRESSION, OVER_BUDGET)


@dataclass
class CheckRow:
    """One compared figure. ``kind``: memory | latency | status | budget | run.

    ``baseline``/``current`` are bytes (memory, budget: ``baseline`` holds the budget), milliseconds
    (latency) or a status string; ``change`` is the relative change (0.05 = +5%) or None.
    """

    case: str  # "model precision device"
    run: str  # "optimizer/impl"
    metric: str
    kind: str
    baseline: Any
    current: Any
    change: float | None
    verdict: str
    limit: float | None = None  # the tolerance applied (fraction), None for budgets and status

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING


@dataclass
class CheckReport:
    tolerance: float
    tolerance_latency: float
    budgets: dict[str, int] = field(default_factory=dict)
    rows: list[CheckRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    matched_runs: int = 0

    @property
    def passed(self) -> bool:
        return not any(r.failed for r in self.rows)

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.failed]

    def summary(self) -> str:
        """One line: 'PASS: 24 figures within tolerance' or 'FAIL: state_bytes of sgdsai/foreach +5.26% ...'."""
        if self.passed:
            n = sum(1 for r in self.rows if r.kind in ("memory", "latency", "budget"))
            return f"PASS: {n} figures compared over {self.matched_runs} runs, none regressed or over budget"
        parts = [f"{r.metric} of {r.run} ({r.case}) {_change_text(r)}".replace("  ", " ")
                 for r in self.failures]
        return f"FAIL: {len(parts)} regression(s)/budget(s) exceeded: " + "; ".join(parts)


def parse_budget(text: str) -> tuple[str, int]:
    """'state=30GiB' -> ('state', 32212254720); BadInput naming the bad part."""
    key, sep, size = str(text).partition("=")
    key = key.strip().lower().removesuffix("_bytes")
    if not sep or not key or not size.strip():
        raise BadInput(f"bad budget '{text}' (use KEY=SIZE, e.g. state=30GiB or peak=80GB)")
    if key not in BUDGET_KEYS:
        raise BadInput(f"unknown budget key '{key}' in '{text}'" + did_you_mean(key, BUDGET_KEYS))
    return key, parse_size(size)


def parse_budgets(texts: list[str] | None) -> dict[str, int]:
    """Several --budget values -> {key: bytes}; a key given twice keeps the last."""
    return dict(parse_budget(t) for t in (texts or []))


def _run_key(doc: dict, run: dict) -> tuple:
    spec = doc.get("spec") or {}
    model = spec.get("model") or (doc.get("model") or {}).get("name")
    device = ((doc.get("environment") or {}).get("device") or {}).get("type") or spec.get("device")
    return (model, spec.get("precision"), device, run.get("optimizer"), run.get("impl"))


def _label(key: tuple) -> tuple[str, str]:
    """(case, run) for a run key: ('llama2-7b fp32 meta', 'sgdsai/foreach')."""
    model, precision, device, optimizer, impl = key
    return f"{model} {precision} {device}", f"{optimizer}/{impl or '-'}"


def _indexed_runs(doc: dict) -> dict[tuple, dict]:
    """Runs keyed by (key..., occurrence) so duplicates match in order."""
    seen: dict[tuple, int] = defaultdict(int)
    out = {}
    for run in doc.get("runs") or []:
        key = _run_key(doc, run)
        out[(*key, seen[key])] = run
        seen[key] += 1
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _relative(base: float, cur: float) -> float | None:
    if base == 0:
        return 0.0 if cur == 0 else None  # from nothing to something: no finite ratio
    return (cur - base) / base


def _verdict(base: float, cur: float, tolerance: float) -> tuple[float | None, str]:
    change = _relative(base, cur)
    if change is None:
        return None, REGRESSION if cur > base else OK
    if change > tolerance:
        return change, REGRESSION
    if change < -tolerance:
        return change, IMPROVED
    return change, OK


def _same_device_model(a: dict, b: dict) -> tuple[bool, str]:
    da = (a.get("environment") or {}).get("device") or {}
    db = (b.get("environment") or {}).get("device") or {}
    if da.get("type") in (None, "meta") and db.get("type") in (None, "meta"):
        return False, ""  # sizing on meta: no timings on either side, nothing to say
    if da.get("type") in (None, "meta") or db.get("type") in (None, "meta"):
        return False, "latency not compared: one side is meta sizing, which has no timings"
    if da.get("type") != db.get("type") or not da.get("name") or da.get("name") != db.get("name"):
        return False, f"latency not compared: devices differ ({db.get('name')!r} baseline, {da.get('name')!r} now)"
    return True, ""


def budget_value(memory: dict, key: str) -> int | None:
    """The figure a budget key caps: the field ``<key>_bytes``, or for ``peak`` the largest peak figure."""
    if key == "peak":
        values = [v for v in (_number(memory.get(m)) for m in PEAK_METRICS) if v is not None]
        return max(values) if values else None
    return _number(memory.get(f"{key}_bytes"))


def compare_documents(
    current_doc: dict,
    baseline_doc: dict,
    *,
    tolerance: float,
    tolerance_latency: float = 0.10,
    budgets: dict[str, int] | None = None,
) -> CheckReport:
    """Compare two profile documents (already loaded and validated) and apply budgets.

    Raises ``BadInput`` when there is nothing to compare: no run of the result matches the baseline
    (and no budget applies), or a budget key no run of the result has a figure for.
    """
    if tolerance < 0 or tolerance_latency < 0:
        raise BadInput("tolerances must be zero or more")
    budgets = dict(budgets or {})
    for key in budgets:
        if key not in BUDGET_KEYS:
            raise BadInput(f"unknown budget key '{key}'" + did_you_mean(key, BUDGET_KEYS))
    report = CheckReport(tolerance=tolerance, tolerance_latency=tolerance_latency, budgets=budgets)
    current = _indexed_runs(current_doc)
    baseline = _indexed_runs(baseline_doc)
    compare_latency, why = _same_device_model(current_doc, baseline_doc)
    if why:
        report.notes.append(why)

    for ikey, brun in baseline.items():
        label = _label(ikey[:5])
        crun = current.get(ikey)
        if crun is None:
            report.rows.append(CheckRow(*label, "run", "run", brun.get("status"), None, None, MISSING))
            continue
        report.matched_runs += 1
        bstatus, cstatus = brun.get("status"), crun.get("status")
        if bstatus != cstatus:
            verdict = REGRESSION if bstatus == "ok" else (IMPROVED if cstatus == "ok" else NOT_OK)
            report.rows.append(CheckRow(*label, "status", "status", bstatus, cstatus, None, verdict))
        bmem, cmem = brun.get("memory") or {}, crun.get("memory") or {}
        for metric in MEMORY_METRICS:
            b, c = _number(bmem.get(metric)), _number(cmem.get(metric))
            if b is None or c is None:
                continue
            change, verdict = _verdict(b, c, tolerance)
            report.rows.append(CheckRow(*label, metric, "memory", b, c, change, verdict, tolerance))
        if compare_latency:
            blat, clat = brun.get("latency_ms") or {}, crun.get("latency_ms") or {}
            for phase in LATENCY_PHASES:
                b = _number((blat.get(phase) or {}).get("p50"))
                c = _number((clat.get(phase) or {}).get("p50"))
                if b is None or c is None:
                    continue
                change, verdict = _verdict(b, c, tolerance_latency)
                report.rows.append(CheckRow(*label, f"{phase}_p50_ms", "latency", b, c, change, verdict,
                                            tolerance_latency))
    for ikey, crun in current.items():
        if ikey not in baseline:
            report.rows.append(CheckRow(*_label(ikey[:5]), "run", "run", None, crun.get("status"), None, NEW))

    for key, limit in budgets.items():
        applied = 0
        for ikey, crun in current.items():
            value = budget_value(crun.get("memory") or {}, key)
            if value is None:
                continue
            applied += 1
            verdict = OVER_BUDGET if value > limit else WITHIN_BUDGET
            report.rows.append(CheckRow(*_label(ikey[:5]), f"budget {key}", "budget", limit, value,
                                        _relative(limit, value), verdict))
        if not applied:
            raise BadInput(f"budget '{key}': no run in the result has a {key} figure"
                           + (" (sizing on meta has no measured peaks; profile on a GPU, or add estimates)"
                              if key.startswith("peak") or key == "nvml_used_peak" else ""))

    if report.matched_runs == 0 and not budgets:
        base_keys = sorted({" ".join(_label(k[:5])) for k in baseline}) or ["none"]
        cur_keys = sorted({" ".join(_label(k[:5])) for k in current}) or ["none"]
        raise BadInput("nothing to compare: no run matches the baseline by model, precision, device, optimizer "
                       f"and implementation (baseline has {', '.join(base_keys)}; result has {', '.join(cur_keys)})")
    return report


def compare_files(result_path, baseline_path, **kwargs) -> CheckReport:
    """Load both files (BadInput for missing, corrupt or wrong-schema files) and compare them."""
    from sgdsai_cli.schema import load_document

    current = load_document(result_path, kinds=("profile",))
    baseline = load_document(baseline_path, kinds=("profile",))
    return compare_documents(current, baseline, **kwargs)


# --------------------------------------------------------------------------------------------------
# Rendering: plain data and a rich table (the CLI decides where they go).


def fmt_bytes(n: float | None) -> str:
    """Bytes for a check table: GiB with two decimals, smaller units when GiB would read 0.00."""
    if n is None:
        return "-"
    if abs(n) >= 0.01 * 1024**3:
        return f"{n / 1024**3:,.2f} GiB"
    for unit, size in (("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n):,} B"


def _fmt_value(row: CheckRow, value: Any) -> str:
    if value is None:
        return "-"
    if row.kind in ("memory", "budget"):
        return fmt_bytes(value)
    if row.kind == "latency":
        return f"{value:,.3f} ms"
    return str(value)


def _change_text(row: CheckRow) -> str:
    if row.kind in ("status", "run"):
        return ""
    if row.change is None:
        return "-" if row.current == row.baseline else "from 0"
    return f"{row.change * 100:+.2f}%"


def report_to_dict(report: CheckReport) -> dict:
    """Plain data for ``--format json``: passed, tolerances, budgets, rows, notes and a summary line."""
    return {
        "kind": "check",
        "passed": report.passed,
        "summary": report.summary(),
        "tolerance": report.tolerance,
        "tolerance_latency": report.tolerance_latency,
        "budgets_bytes": dict(report.budgets),
        "matched_runs": report.matched_runs,
        "rows": [asdict(r) | {"failed": r.failed} for r in report.rows],
        "notes": list(report.notes),
    }


_STYLE = {REGRESSION: "bold red", OVER_BUDGET: "bold red", IMPROVED: "green", OK: "", WITHIN_BUDGET: "",
          MISSING: "yellow", NEW: "yellow", NOT_OK: "yellow"}


def check_table(report: CheckReport, *, title: str | None = None):
    """A rich Table: run, metric, baseline, current, change, verdict (failures in red)."""
    from rich.table import Table

    cases = sorted({row.case for row in report.rows})
    if title is None:
        title = "check: " + ("PASS" if report.passed else "FAIL") + (f" ({cases[0]})" if len(cases) == 1 else "")
    table = Table(title=title, title_justify="left")
    columns = [("case", "left")] if len(cases) > 1 else []
    for name, justify in (*columns, ("run", "left"), ("metric", "left"), ("baseline", "right"), ("current", "right"),
                          ("change", "right"), ("verdict", "left")):
        widest = {"run": min(22, max([len(r.run) for r in report.rows] or [3])),
                  "verdict": max([7] + [len(r.verdict) for r in report.rows])}
        table.add_column(name, justify=justify, no_wrap=True, min_width=widest.get(name))
    for row in report.rows:
        style = _STYLE.get(row.verdict, "")
        baseline_text = _fmt_value(row, row.baseline)
        if row.kind == "budget":
            baseline_text = f"budget {baseline_text}"
        cells = [row.case] if len(cases) > 1 else []
        metric = row.metric.removesuffix("_bytes") if row.kind == "memory" else row.metric
        table.add_row(*cells, row.run, metric, baseline_text, _fmt_value(row, row.current), _change_text(row),
                      row.verdict, style=style or None)
    return table
