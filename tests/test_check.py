"""sgdsai_cli.analysis.check: matching runs, tolerances, budgets, latency rules, nothing-to-compare."""

from __future__ import annotations

import copy
import re

import pytest

from sgdsai_cli.analysis.check import BUDGET_KEYS, budget_value, check, compare, parse_budget, parse_budgets
from sgdsai_cli.errors import BadInput
from sgdsai_cli.render.check import check_table
from sgdsai_cli.render.format import size
from sgdsai_cli.results import MemoryResult, ProfileResult


def compare_documents(current, baseline, **kwargs):
    """compare() on two document dicts (the fixtures below)."""
    return compare(ProfileResult.from_dict(current), ProfileResult.from_dict(baseline), **kwargs)

P = 6_738_415_616  # llama2-7b parameters


def run(optimizer="sgdsai", impl="loop", status="ok", state=4 * P, latency=None, **memory):
    mem = {"source": "meta", "state_bytes": state, "state_bytes_by_key": {"momentum_buffer": state},
           "param_bytes": 4 * P, "grad_bytes": 4 * P, "activation_peak_bytes": None,
           "peak_allocated_bytes": None, **memory}
    return {"optimizer": optimizer, "impl": impl, "status": status, "memory": mem, "latency_ms": latency,
            "error": None}


def doc(runs, model="llama2-7b", precision="fp32", device="meta", name="meta", created="2026-01-01T00:00:00Z"):
    return {
        "schema_version": 1, "kind": "profile", "tool_version": "0.1.0", "created_utc": created,
        "environment": {"python": "3.11", "torch": "2.13.0", "platform": "x",
                        "device": {"type": device, "name": name, "total_memory_bytes": None}},
        "spec": {"model": model, "precision": precision, "device": device, "batch_size": 1, "seq_len": 512},
        "model": {"name": model, "family": "llama", "params": P},
        "runs": runs,
    }


BASE = doc([run("sgdsai", state=4 * P + 1164), run("adamw", state=8 * P + 2328)])


def scaled(document, optimizer, metric, factor):
    out = copy.deepcopy(document)
    for r in out["runs"]:
        if r["optimizer"] == optimizer:
            r["memory"][metric] = int(r["memory"][metric] * factor)
    return out


def test_self_check_passes_and_ignores_environment():
    other = copy.deepcopy(BASE)
    other["created_utc"] = "2030-05-05T00:00:00Z"
    other["environment"]["python"] = "3.13"
    other["environment"]["platform"] = "elsewhere"
    report = compare_documents(other, BASE, tolerance=0.0)
    assert report.passed
    assert report.matched_runs == 2
    # state, param and grad bytes of two runs: 6 figures, all unchanged
    assert [r.verdict for r in report.rows] == ["ok"] * 6
    assert all(r.change == 0.0 for r in report.rows)


@pytest.mark.parametrize(
    ("factor", "tolerance", "verdict", "passed"),
    [
        (1.0, 0.01, "ok", True),
        (1.005, 0.01, "ok", True),  # within 1%
        (1.02, 0.01, "regression", False),
        (1.02, 0.05, "ok", True),
        (0.95, 0.01, "improved", True),  # shrinkage is reported, never fails
        (1.0000001, 0.0, "regression", False),  # exact gate: any growth fails
    ],
)
def test_state_tolerance(factor, tolerance, verdict, passed):
    current = scaled(BASE, "adamw", "state_bytes", factor)
    report = compare_documents(current, BASE, tolerance=tolerance)
    row = next(r for r in report.rows if r.run == "adamw/loop" and r.metric == "state_bytes")
    assert row.verdict == verdict
    assert report.passed is passed
    assert row.change == pytest.approx(int((8 * P + 2328) * factor) / (8 * P + 2328) - 1)


def test_baseline_five_percent_smaller_fails_and_names_metric():
    baseline = scaled(BASE, "sgdsai", "state_bytes", 0.95)
    report = compare_documents(BASE, baseline, tolerance=0.01)
    assert not report.passed
    [failure] = report.failures
    assert (failure.run, failure.metric) == ("sgdsai/loop", "state_bytes")
    assert failure.change == pytest.approx(1 / 0.95 - 1, rel=1e-6)
    assert "state_bytes of sgdsai/loop" in report.summary() and "+5.26%" in report.summary()


def test_runs_match_by_model_precision_device_optimizer_impl():
    other_impl = copy.deepcopy(BASE)
    other_impl["runs"][0]["impl"] = "foreach"
    other_impl["runs"][0]["memory"]["state_bytes"] *= 2  # would fail if it were matched
    report = compare_documents(other_impl, BASE, tolerance=0.01)
    verdicts = {(r.run, r.metric): r.verdict for r in report.rows}
    assert verdicts[("sgdsai/loop", "run")] == "missing"
    assert verdicts[("sgdsai/foreach", "run")] == "new"
    assert report.passed and report.matched_runs == 1


@pytest.mark.parametrize(
    "change",
    [{"model": "gpt2"}, {"precision": "bf16"}, {"device": "cuda", "name": "NVIDIA H100"}],
)
def test_nothing_to_compare_is_bad_input(change):
    other = doc([run("sgdsai"), run("adamw", state=8 * P)], **change)
    with pytest.raises(BadInput, match="nothing to compare"):
        compare_documents(other, BASE, tolerance=0.01)


def test_status_ok_to_oom_is_a_regression():
    current = copy.deepcopy(BASE)
    current["runs"][1] = run("adamw", status="oom", state=None, param_bytes=None, grad_bytes=None)
    report = compare_documents(current, BASE, tolerance=0.01)
    assert not report.passed
    assert [(r.metric, r.baseline, r.current, r.verdict) for r in report.failures] == [
        ("status", "ok", "oom", "regression")]


def _latency(p50):
    return {"optimizer_step": {"p50": p50, "p90": p50, "min": p50, "max": p50, "n": 10}, "first_step": 3 * p50}


@pytest.mark.parametrize(
    ("base_name", "cur_name", "p50", "compared", "passed"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", 10.5, True, True),  # +5% < 10%
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", 12.0, True, False),  # +20%
        ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", 50.0, False, True),  # other card: not compared
    ],
)
def test_latency_only_on_same_device_model(base_name, cur_name, p50, compared, passed):
    base = doc([run("sgdsai", latency=_latency(10.0))], device="cuda", name=base_name)
    cur = doc([run("sgdsai", latency=_latency(p50))], device="cuda", name=cur_name)
    report = compare_documents(cur, base, tolerance=0.01, tolerance_latency=0.10)
    latency_rows = [r for r in report.rows if r.kind == "latency"]
    assert bool(latency_rows) is compared
    assert report.passed is passed
    if not compared:
        assert any("devices differ" in n for n in report.notes)


@pytest.mark.parametrize(
    ("budgets", "failing"),
    [
        ({"state": 8 * P + 2328}, []),  # exactly at the budget passes
        ({"state": 8 * P}, [("adamw/loop", "budget state")]),
        ({"state": 4 * P}, [("sgdsai/loop", "budget state"), ("adamw/loop", "budget state")]),
        ({"param": 4 * P, "grad": 4 * P - 1}, [("sgdsai/loop", "budget grad"), ("adamw/loop", "budget grad")]),
    ],
)
def test_budgets(budgets, failing):
    report = compare_documents(BASE, BASE, tolerance=0.01, budgets=budgets)
    assert [(r.run, r.metric) for r in report.failures] == failing
    assert report.passed is (not failing)


def test_peak_budget_takes_the_largest_peak_figure():
    memory = {"peak_allocated_bytes": 10, "peak_reserved_bytes": 30, "nvml_used_peak_bytes": 25,
              "estimated_peak_bytes": None}
    memory = MemoryResult.from_dict({"source": "measured", **memory})
    assert budget_value(memory, "peak") == 30
    assert budget_value(MemoryResult("fake", estimated_peak_bytes=7), "peak") == 7
    assert budget_value(MemoryResult("meta"), "peak") is None
    assert budget_value(memory, "peak_allocated") == 10


def test_budget_on_a_figure_no_run_has_is_bad_input():
    with pytest.raises(BadInput, match="budget 'peak_allocated': no run"):
        compare_documents(BASE, BASE, tolerance=0.01, budgets={"peak_allocated": 10})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("state=30GiB", ("state", 30 * 1024**3)), ("peak=80GB", ("peak", 80 * 10**9)),
     ("state_bytes=1024", ("state", 1024)), (" Peak_Allocated = 1MiB", ("peak_allocated", 1024**2))],
)
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("state", "use KEY=SIZE"), ("=1GiB", "use KEY=SIZE"), ("stat=1GiB", "did you mean state"),
     ("state=lots", "bad size 'lots'"), ("state=-1GiB", "bad size")],
)
def test_parse_budget_errors(text, message):
    with pytest.raises(BadInput, match=message):
        parse_budget(text)


def test_budget_keys_cover_the_issue():
    assert {"state", "peak_allocated", "peak_reserved", "nvml_used_peak", "activation_peak", "step_transient",
            "peak"} <= set(BUDGET_KEYS)


def test_report_to_dict_and_table():
    baseline = scaled(BASE, "sgdsai", "state_bytes", 0.95)
    report = compare_documents(BASE, baseline, tolerance=0.01)
    data = report.to_dict()
    assert data["passed"] is False and data["kind"] == "check"
    assert data["tolerance"] == 0.01
    failed = [r for r in data["rows"] if r["failed"]]
    assert [(r["run"], r["metric"], r["current"]) for r in failed] == [("sgdsai/loop", "state_bytes", 4 * P + 1164)]
    table = check_table(report)
    assert [c.header for c in table.columns] == ["run", "metric", "baseline", "current", "change", "verdict"]
    assert table.row_count == 6
    assert "llama2-7b fp32 meta" in str(table.title)


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (512, "512 B"), (2048, "2.00 KiB"), (3 * 1024**2, "3.00 MiB"), (4 * P, "25.10 GiB")],
)
def test_sizes_in_the_table(n, text):
    assert size(n) == text


def test_growth_from_zero_is_a_regression():
    base = doc([run("sgdsai", step_transient_bytes=0)])
    cur = doc([run("sgdsai", step_transient_bytes=10)])
    report = compare_documents(cur, base, tolerance=0.5)
    [failure] = report.failures
    assert (failure.metric, failure.change, failure.verdict) == ("step_transient_bytes", None, "regression")
    assert report.summary().endswith("step_transient_bytes of sgdsai/loop (llama2-7b fp32 meta) from 0")
    assert compare_documents(base, base, tolerance=0).passed  # 0 -> 0 is fine


# --- never a silent pass -------------------------------------------------------------------------

def _nulls(optimizer):
    """A run whose every figure is null (as a meta sizing that failed to size anything)."""
    return run(optimizer, state=None, state_bytes_by_key={}, param_bytes=None, grad_bytes=None)


@pytest.mark.parametrize(
    ("current", "baseline"),
    [
        (doc([_nulls("sgdsai"), _nulls("adamw")]), BASE),  # the result's figures are all null
        (BASE, doc([_nulls("sgdsai"), _nulls("adamw")])),  # the baseline's are
        (doc([_nulls("sgdsai")]), doc([_nulls("sgdsai")])),  # both
        (doc([run("sgdsai", status="oom", state=None, param_bytes=None, grad_bytes=None)]),
         doc([run("sgdsai", status="oom", state=None, param_bytes=None, grad_bytes=None)])),  # oom both times
    ],
)
def test_matched_runs_without_a_common_figure_are_nothing_to_compare(current, baseline):
    with pytest.raises(BadInput, match=r"nothing to compare: the matched runs \(sgdsai/loop \(llama2-7b fp32 meta\)"):
        compare_documents(current, baseline, tolerance=0.01)


def test_a_budget_applied_counts_as_compared():
    current = doc([run("sgdsai", param_bytes=None, grad_bytes=None)])
    baseline = doc([_nulls("sgdsai")])
    report = compare_documents(current, baseline, tolerance=0.01, budgets={"state": 10 * P})
    assert report.passed and report.compared == 1
    assert [(r.metric, r.verdict) for r in report.rows] == [("budget state", "within budget")]


def test_a_status_regression_without_figures_still_fails():
    baseline = doc([run("sgdsai", state=None, param_bytes=None, grad_bytes=None)])
    current = doc([run("sgdsai", status="oom", state=None, param_bytes=None, grad_bytes=None)])
    report = compare_documents(current, baseline, tolerance=0.01)
    assert not report.passed and report.compared == 0
    assert [(r.metric, r.verdict) for r in report.failures] == [("status", "regression")]


# --- duplicate runs --------------------------------------------------------------------------------

def _copies(n_sgdsai, factor=1):
    return doc([run("sgdsai", state=(4 * P + 1164) * (factor if i else 1)) for i in range(n_sgdsai)]
               + [run("adamw", state=8 * P + 2328)])


@pytest.mark.parametrize(
    ("current", "baseline", "counts"),
    [
        (_copies(2, factor=10), _copies(1), "the result holds it 2 time(s), the baseline 1"),
        (_copies(1), _copies(2), "the result holds it 1 time(s), the baseline 2"),
        (_copies(3), _copies(2), "the result holds it 3 time(s), the baseline 2"),
        (_copies(2), doc([run("adamw", state=8 * P + 2328)]), "the result holds it 2 time(s), the baseline 0"),
    ],
)
def test_duplicate_runs_that_cannot_be_paired_are_bad_input(current, baseline, counts):
    with pytest.raises(BadInput) as err:
        compare_documents(current, baseline, tolerance=0.01)
    assert str(err.value).startswith("duplicate run sgdsai/loop (llama2-7b fp32 meta): ")
    assert counts in str(err.value)


def test_duplicate_runs_with_equal_counts_pair_in_order():
    baseline = _copies(2)
    current = _copies(2, factor=1)
    current["runs"][1]["memory"]["state_bytes"] *= 10  # the second copy grew: compared with the second
    report = compare_documents(current, baseline, tolerance=0.01)
    assert report.matched_runs == 3
    assert [(r.run, r.metric, r.baseline) for r in report.failures] == [
        ("sgdsai/loop", "state_bytes", 4 * P + 1164)]
    assert not any(r.verdict in ("new", "missing") for r in report.rows)


def test_one_copy_on_each_side_is_no_duplicate():
    assert compare_documents(_copies(1), _copies(1), tolerance=0).passed


# --- budgets and tolerances ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["state=1KiB", "state=1GB"], "budget 'state' given twice ('state=1KiB' and 'state=1GB')"),
        (["state=1GB", "state_bytes=1GB"], "budget 'state' given twice ('state=1GB' and 'state_bytes=1GB')"),
        (["peak=1GB", "grad=1GB", " PEAK = 2GB"], "budget 'peak' given twice"),
    ],
)
def test_repeated_budget_keys_are_refused(texts, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        parse_budgets(texts)


def test_distinct_budget_keys_are_all_kept():
    assert parse_budgets(["state=1KiB", "peak=1GB", "grad=2"]) == {"state": 1024, "peak": 10**9, "grad": 2}
    assert parse_budgets(None) == {} and parse_budgets([]) == {}


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -0.01, True, "1e400", "nan%"])
def test_tolerances_must_be_finite(bad):
    with pytest.raises(BadInput, match="finite|zero or more"):
        check(BASE, BASE, tolerance=bad)
    with pytest.raises(BadInput, match="finite|zero or more"):
        check(BASE, BASE, tolerance_latency=bad)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -1.0])
def test_compare_refuses_non_finite_tolerances(bad):
    with pytest.raises(BadInput, match="must be a finite fraction, zero or more"):
        compare_documents(BASE, BASE, tolerance=bad)
    with pytest.raises(BadInput, match="must be a finite fraction, zero or more"):
        compare_documents(BASE, BASE, tolerance=0.01, tolerance_latency=bad)


def _two_ranks(doc: dict, state_of_rank1: int) -> dict:
    """``doc``'s first run as ranks 0 and 1 of a 2-rank FSDP2 job (rank 1 with ``state_of_rank1`` state bytes)."""
    doc = copy.deepcopy(doc)
    run = doc["runs"][0]
    ranks = []
    for rank in (0, 1):
        r = copy.deepcopy(run)
        r.update({"rank": rank, "world_size": 2, "parallel": "fsdp2"})
        if rank == 1:
            r["memory"]["state_bytes"] = state_of_rank1
        ranks.append(r)
    doc["runs"] = ranks
    return doc


def test_a_regression_on_any_rank_fails_the_check(tiny_profile):
    state = tiny_profile["runs"][0]["memory"]["state_bytes"]
    base = _two_ranks(tiny_profile, state)
    same = compare(ProfileResult.from_dict(_two_ranks(tiny_profile, state)), ProfileResult.from_dict(base),
                   tolerance=0.0)
    assert same.passed and same.matched_runs == 2
    grown = compare(ProfileResult.from_dict(_two_ranks(tiny_profile, state + 1000)), ProfileResult.from_dict(base),
                    tolerance=0.0)
    [failure] = grown.failures
    assert (failure.metric, failure.verdict) == ("state_bytes", "regression")
    assert failure.run.endswith("(fsdp2 rank 1/2)")


def test_ranks_never_pair_with_a_single_process_run(tiny_profile):
    with pytest.raises(BadInput, match="nothing to compare"):
        compare(ProfileResult.from_dict(_two_ranks(tiny_profile, 1)), ProfileResult.from_dict(tiny_profile),
                tolerance=0.0)


def test_per_rank_rows_are_labelled_side_by_side(tiny_profile):
    from sgdsai_cli.render.profile import summary_rows

    assert [r["column"] for r in summary_rows(_two_ranks(tiny_profile, 1))] == ["sgdsai r0", "sgdsai r1"]
    assert [r["column"] for r in summary_rows(tiny_profile)] == [r["optimizer"] for r in tiny_profile["runs"]]
