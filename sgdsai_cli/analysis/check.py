"""Baseline check: compare a profile result with a baseline and with byte budgets.

    report = check("result.json", baseline="base.json", tolerance="1%", budgets=["state=30GiB"])
    report.passed           # False when a metric regressed or a budget is exceeded
    report.to_dict()        # plain data (what `sgdsai check --format json` prints)

Rules:

- the two results must profile the same model: equal fingerprints, or equal display names
  (``model_match``; a path's spelling does not count); the same name with another fingerprint is a
  regression (the architecture changed under that name);
- runs are matched by (model, precision, device type, optimizer, implementation, and for one rank of
  a parallel job its mode, rank and world size: a regression on any rank fails); two runs with the
  same key are matched in the order they appear, and only when both sides hold the same number of
  them (otherwise which copy pairs with which is a guess: ``BadInput``);
- every memory metric (a ``*_bytes`` number) present in both runs is compared: growth beyond
  ``tolerance`` (a fraction, 0.01 = 1%) is a regression, shrinkage beyond it an improvement;
- latency (p50 of optimizer step, forward, backward) only when both results ran on the same device
  model (same device type and name, not meta); growth beyond ``tolerance_latency`` is a regression;
- a run that was ``ok`` in the baseline and is not ``ok`` now (oom, error) is a regression;
- budgets cap a current run's metric whatever the baseline says. Keys are memory field names without
  ``_bytes`` (see ``BUDGET_KEYS``) plus ``peak``: the largest peak figure the run has; one budget a key.

Nothing to compare (no run matched, matched runs with no figure on both sides, or a budget no run can
be measured against) is bad input (``BadInput``, exit 2), never a silent pass; a budget applied counts
as a compared figure. The environment and ``created_utc`` fields are not compared.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sgdsai_cli.analysis.model_match import match_models
from sgdsai_cli.errors import BadInput, did_you_mean
from sgdsai_cli.results import ProfileResult, RunResult
from sgdsai_cli.units import parse_percent, parse_size

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

    @property
    def compared(self) -> int:
        """How many figures were compared (memory, latency, budgets)."""
        return sum(1 for r in self.rows if r.kind in ("memory", "latency", "budget"))

    def summary(self) -> str:
        """One line: 'PASS: 24 figures compared ...' or 'FAIL: ...: state_bytes of sgdsai/foreach +5.26%'."""
        if self.passed:
            return (f"PASS: {self.compared} figures compared over {self.matched_runs} runs, "
                    "none regressed or over budget")
        parts = [f"{r.metric} of {r.run} ({r.case}) {change_text(r)}".replace("  ", " ")
                 for r in self.failures]
        return f"FAIL: {len(parts)} regression(s)/budget(s) exceeded: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``sgdsai check --format json``): passed, tolerances, budgets, rows, notes, a summary."""
        return {
            "kind": "check",
            "passed": self.passed,
            "summary": self.summary(),
            "tolerance": self.tolerance,
            "tolerance_latency": self.tolerance_latency,
            "budgets_bytes": dict(self.budgets),
            "matched_runs": self.matched_runs,
            "rows": [asdict(r) | {"failed": r.failed} for r in self.rows],
            "notes": list(self.notes),
        }


def change_text(row: CheckRow) -> str:
    """The relative change as text ('+5.26%'; 'from 0' where the baseline was 0; '' for status rows)."""
    if row.kind in ("status", "run", "model"):
        return ""
    if row.change is None:
        return "-" if row.current == row.baseline else "from 0"
    return f"{row.change * 100:+.2f}%"


def parse_budget(text: str) -> tuple[str, int]:
    """'state=30GiB' -> ('state', 32212254720); BadInput naming the bad part."""
    key, sep, size = str(text).partition("=")
    key = key.strip().lower().removesuffix("_bytes")
    if not sep or not key or not size.strip():
        raise BadInput(f"bad budget {str(text)!r} (use KEY=SIZE, e.g. state=30GiB or peak=80GB)")
    if key not in BUDGET_KEYS:
        raise BadInput(f"unknown budget key '{key}' in {str(text)!r}" + did_you_mean(key, BUDGET_KEYS))
    return key, parse_size(size)


def parse_budgets(texts: list[str] | None) -> dict[str, int]:
    """Several budget texts -> {key: bytes}; a key given twice is BadInput (which one was meant?)."""
    budgets: dict[str, int] = {}
    given: dict[str, str] = {}
    for text in texts or []:
        key, limit = parse_budget(text)
        if key in budgets:
            raise BadInput(f"budget '{key}' given twice ('{given[key]}' and {str(text)!r}): give one budget per key",
                           field="budget", value=text)
        budgets[key], given[key] = limit, text
    return budgets


def _run_key(result: ProfileResult, run: RunResult, model: str) -> tuple:
    return (model, result.spec.precision, result.device_type, run.optimizer, run.impl, _rank_of(run))


def _rank_of(run: RunResult) -> str:
    """'' for a single-process run; 'fsdp2 rank 1/8' for one rank of a parallel job (each rank compared alone)."""
    extra = run.extra or {}
    if extra.get("parallel") in (None, "none") and extra.get("rank") is None:
        return ""
    return f"{extra.get('parallel')} rank {extra.get('rank')}/{extra.get('world_size')}"


def _label(key: tuple) -> tuple[str, str]:
    """(case, run) for a run key: ('llama2-7b fp32 meta', 'sgdsai/foreach'), a rank after the run when there is one."""
    model, precision, device, optimizer, impl, rank = key
    return f"{model} {precision} {device}", f"{optimizer}/{impl or '-'}" + (f" ({rank})" if rank else "")


def _indexed_runs(result: ProfileResult, model: str) -> dict[tuple, RunResult]:
    """Runs keyed by (key..., occurrence) so duplicates match in order."""
    seen: dict[tuple, int] = defaultdict(int)
    out = {}
    for run in result.runs:
        key = _run_key(result, run, model)
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


def _same_device_model(a: ProfileResult, b: ProfileResult) -> tuple[bool, str]:
    da, db = a.environment.device or {}, b.environment.device or {}
    if da.get("type") in (None, "meta") and db.get("type") in (None, "meta"):
        return False, ""  # sizing on meta: no timings on either side, nothing to say
    if da.get("type") in (None, "meta") or db.get("type") in (None, "meta"):
        return False, "latency not compared: one side is meta sizing, which has no timings"
    if da.get("type") != db.get("type") or not da.get("name") or da.get("name") != db.get("name"):
        return False, f"latency not compared: devices differ ({db.get('name')!r} baseline, {da.get('name')!r} now)"
    return True, ""


def budget_value(memory, key: str) -> int | None:
    """The figure a budget key caps: the field ``<key>_bytes``, or for ``peak`` the largest peak figure."""
    if memory is None:
        return None
    if key == "peak":
        values = [v for v in (_number(getattr(memory, m)) for m in PEAK_METRICS) if v is not None]
        return max(values) if values else None
    return _number(getattr(memory, f"{key}_bytes", None))


def _latency_p50(run: RunResult, phase: str) -> float | None:
    stats = (run.latency_ms or {}).get(phase)
    return _number(stats.get("p50")) if isinstance(stats, dict) else None


def compare(
    current_doc: ProfileResult,
    baseline_doc: ProfileResult,
    *,
    tolerance: float,
    tolerance_latency: float = 0.10,
    budgets: dict[str, int] | None = None,
) -> CheckReport:
    """Compare two profile results and apply budgets (tolerances as fractions, budgets in bytes).

    Raises ``BadInput`` when there is nothing to compare: no run of the result matches the baseline
    (and no budget applies), matched runs share no non-null figure (and no budget applies), or a budget
    key no run of the result has a figure for; and when a run key is repeated on one side and the two
    sides hold different numbers of it (no honest pairing).
    """
    for name, value in (("tolerance", tolerance), ("tolerance_latency", tolerance_latency)):
        if not (math.isfinite(value) and value >= 0):
            raise BadInput(f"bad {name} {value!r} (must be a finite fraction, zero or more)", field=name, value=value)
    budgets = dict(budgets or {})
    for key in budgets:
        if key not in BUDGET_KEYS:
            raise BadInput(f"unknown budget key '{key}'" + did_you_mean(key, BUDGET_KEYS))
    report = CheckReport(tolerance=tolerance, tolerance_latency=tolerance_latency, budgets=budgets)
    match = match_models(current_doc, baseline_doc)
    cur_model, base_model = match.labels
    _refuse_unpairable(current_doc, baseline_doc, cur_model, base_model)
    current = _indexed_runs(current_doc, cur_model)
    baseline = _indexed_runs(baseline_doc, base_model)
    compare_latency, why = _same_device_model(current_doc, baseline_doc)
    for note in (match.note, why):
        if note:
            report.notes.append(note)
    if match.fingerprint_changed:
        case = f"{cur_model} {current_doc.spec.precision} {current_doc.device_type}"
        report.rows.append(CheckRow(case, "model", "fingerprint", "model", match.fingerprints[1],
                                    match.fingerprints[0], None, REGRESSION))

    for ikey, brun in baseline.items():
        crun = current.get(ikey)
        if crun is None:
            report.rows.append(CheckRow(*_label(ikey[:6]), "run", "run", brun.status, None, None, MISSING))
        else:
            report.matched_runs += 1
            report.rows += _compare_run(_label(ikey[:6]), brun, crun, tolerance,
                                        tolerance_latency if compare_latency else None)
    report.rows += [CheckRow(*_label(ikey[:6]), "run", "run", None, crun.status, None, NEW)
                    for ikey, crun in current.items() if ikey not in baseline]
    for key, limit in budgets.items():
        report.rows += _budget_rows(current, key, limit)
    if report.matched_runs == 0 and not budgets:
        base_keys = sorted({" ".join(_label(k[:6])) for k in baseline}) or ["none"]
        cur_keys = sorted({" ".join(_label(k[:6])) for k in current}) or ["none"]
        raise BadInput("nothing to compare: no run matches the baseline by model, precision, device, optimizer "
                       f"and implementation (baseline has {', '.join(base_keys)}; result has {', '.join(cur_keys)})")
    if report.compared == 0 and report.passed:
        matched = [f"{r} ({c})" for c, r in (_label(k[:6]) for k in baseline if k in current)]
        shown = ", ".join(matched[:3]) + (f" and {len(matched) - 3} more" if len(matched) > 3 else "")
        raise BadInput(f"nothing to compare: the matched runs ({shown}) have no memory or latency figure that is "
                       "non-null in both the result and the baseline, and no budget was given")
    return report


def _refuse_unpairable(current_doc: ProfileResult, baseline_doc: ProfileResult, cur_model: str,
                       base_model: str) -> None:
    """BadInput when a run key appears more than once on a side and the two sides hold different counts."""
    current = Counter(_run_key(current_doc, r, cur_model) for r in current_doc.runs)
    baseline = Counter(_run_key(baseline_doc, r, base_model) for r in baseline_doc.runs)
    for key in [*current, *(k for k in baseline if k not in current)]:
        if current[key] != baseline[key] and max(current[key], baseline[key]) > 1:
            case, run = _label(key)
            raise BadInput(f"duplicate run {run} ({case}): the result holds it {current[key]} time(s), the baseline "
                           f"{baseline[key]}; runs with the same model, precision, device, optimizer and "
                           "implementation are paired in order only when both hold the same number of them",
                           field="runs", value=run)


def _compare_run(label: tuple[str, str], brun: RunResult, crun: RunResult, tolerance: float,
                 tolerance_latency: float | None) -> list[CheckRow]:
    """The status, memory and (when ``tolerance_latency`` is given) latency rows of one matched pair."""
    rows = []
    if brun.status != crun.status:
        verdict = REGRESSION if brun.status == "ok" else (IMPROVED if crun.status == "ok" else NOT_OK)
        rows.append(CheckRow(*label, "status", "status", brun.status, crun.status, None, verdict))
    for metric in MEMORY_METRICS:
        b, c = (_number(getattr(r.memory, metric, None)) for r in (brun, crun))
        if b is not None and c is not None:
            rows.append(CheckRow(*label, metric, "memory", b, c, *_verdict(b, c, tolerance), tolerance))
    for phase in LATENCY_PHASES if tolerance_latency is not None else ():
        b, c = _latency_p50(brun, phase), _latency_p50(crun, phase)
        if b is not None and c is not None:
            rows.append(CheckRow(*label, f"{phase}_p50_ms", "latency", b, c, *_verdict(b, c, tolerance_latency),
                                 tolerance_latency))
    return rows


def _budget_rows(current: dict[tuple, RunResult], key: str, limit: int) -> list[CheckRow]:
    """One row per run that has the budget's figure; BadInput when none has it."""
    rows = []
    for ikey, crun in current.items():
        value = budget_value(crun.memory, key)
        if value is not None:
            verdict = OVER_BUDGET if value > limit else WITHIN_BUDGET
            rows.append(CheckRow(*_label(ikey[:6]), f"budget {key}", "budget", limit, value,
                                 _relative(limit, value), verdict))
    if not rows:
        raise BadInput(f"budget '{key}': no run in the result has a {key} figure"
                       + (" (sizing on meta has no measured peaks; profile on a GPU, or add estimates)"
                          if key.startswith("peak") or key == "nvml_used_peak" else ""))
    return rows


ResultLike = ProfileResult | dict | str | os.PathLike


def as_profile(value: ResultLike) -> ProfileResult:
    """A profile result from a record, a document dict or a file (BadInput for a bad file or document)."""
    from sgdsai_cli.schema import load_document, validate_document

    if isinstance(value, ProfileResult):
        return value
    if isinstance(value, dict):
        validate_document(value, "result", kinds=("profile",))
        return ProfileResult.from_dict(value)
    return ProfileResult.from_dict(load_document(value, kinds=("profile",)))


def _fraction(name: str, value: float | str) -> float:
    """A tolerance: a fraction (0.01) or a percentage text ('1%')."""
    if isinstance(value, str):
        return parse_percent(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise BadInput(f"bad {name} {value!r} (must be a finite fraction, zero or more)", field=name, value=value)
    return float(value)


def check(result: ResultLike, baseline: ResultLike, *, tolerance: float | str = 0.01,
          tolerance_latency: float | str = 0.10, budgets: dict[str, int] | list[str] | None = None) -> CheckReport:
    """Compare a profile result with a baseline (records, dicts or JSON files) and apply budgets.

    Tolerances are fractions (0.01) or percentage texts ("1%"); budgets are {key: bytes} or texts
    such as ``["state=30GiB"]``. ``report.passed`` is the verdict.
    """
    if isinstance(budgets, (list, tuple)):
        budgets = parse_budgets(list(budgets))
    return compare(as_profile(result), as_profile(baseline), tolerance=_fraction("tolerance", tolerance),
                   tolerance_latency=_fraction("tolerance_latency", tolerance_latency), budgets=budgets)


