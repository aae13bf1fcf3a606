"""Real runs on the CPU: the worker's training loop in-process, and a few spawned end to end.

Spawned child processes cost a torch import each (~2-3 s): this file spawns at most five.
Failures are injected by the tests (a patched ``TrainingRun.enter``), never by the production code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.measure import child, compare, devices, limits, realrun, stats, training, worker
from sgdsai_cli.measure.job import Job, JobResult, parse_progress, progress_line
from sgdsai_cli.measure.training import TrainingRun
from sgdsai_cli.models import resolve_model
from sgdsai_cli.progress import Progress
from sgdsai_cli.results import ProfileSpec

PHASES = ("forward", "backward", "optimizer_step", "zero_grad")


def job(model="tiny-gpt2", optimizer="sgdsai", precision="fp32", warmup=2, steps=3, **extra) -> Job:
    spec = ProfileSpec(model=model, precision=precision, device="cpu", batch_size=2, seq_len=16, warmup=warmup,
                       steps=steps)
    return Job(spec, resolve_model(model), optimizer, sample_interval_ms=5, **extra)


def meta_memory(model: str, precision: str, optimizer: str):
    from sgdsai_cli.measure.sizing import size_profile

    spec = ProfileSpec(model=model, precision=precision, device="meta", batch_size=2, seq_len=16)
    return size_profile(spec, resolve_model(model), [optimizer], estimate=False).runs[0].memory


FAILURE_SCRIPT = """
import sys
import torch
from sgdsai_cli.measure import training, worker

enter = training.TrainingRun.enter


def failing_enter(self, phase):
    enter(self, phase)
    if self.job.optimizer == {optimizer!r} and phase == {phase!r} and self.step == 1:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


training.TrainingRun.enter = failing_enter
sys.exit(worker.main(sys.argv[1:]))
"""


def fail_at(monkeypatch, phase: str, kind: str = "oom", optimizer: str | None = None) -> None:
    """Make runs (of ``optimizer``, or all) fail at the start of ``phase`` of step 1."""
    enter = TrainingRun.enter

    def failing_enter(self, name):
        enter(self, name)
        if name == phase and self.step == 1 and optimizer in (None, self.job.optimizer):
            if kind == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            raise RuntimeError(f"simulated failure in {name}")

    monkeypatch.setattr(TrainingRun, "enter", failing_enter)


@pytest.mark.parametrize(
    "model, optimizer, precision, keys",
    [
        ("tiny-gpt2", "sgdsai", "fp32", {"momentum_buffer", "gsnr"}),
        ("tiny-llama", "adamw", "bf16", {"exp_avg", "exp_avg_sq", "step"}),
        ("tiny-vit", "sgd", "fp32", {"momentum_buffer"}),
    ],
)
def test_run_job_measures_phases_latency_and_exact_state(model, optimizer, precision, keys):
    result = worker.run_job(job(model, optimizer, precision, warmup=3, steps=4))
    run = result.run
    assert run.status == "ok", run.error
    mem = run.memory
    assert mem.source == "measured"
    # measured optimizer state equals the meta sizing, byte for byte, key by key
    meta = meta_memory(model, precision, optimizer)
    assert set(mem.state_bytes_by_key) == keys
    assert mem.state_bytes_by_key == meta.state_bytes_by_key
    assert mem.state_bytes == meta.state_bytes > 0
    assert mem.param_bytes == meta.param_bytes == result.model.param_bytes
    assert mem.grad_bytes == meta.grad_bytes
    # per-phase memory: live tensor bytes, peaks at least the bytes before the phase
    phases = mem.details["phases"]
    assert set(phases) == set(PHASES)
    for rec in phases.values():
        assert rec["allocated_peak_bytes"] >= rec["before_bytes"] > 0
    fwd = phases["forward"]
    assert fwd["before_bytes"] >= mem.param_bytes + mem.state_bytes
    assert mem.peak_allocated_bytes >= mem.param_bytes + mem.grad_bytes + mem.state_bytes
    assert mem.activation_peak_bytes > 0
    assert mem.details["rss_peak_bytes"] > mem.peak_allocated_bytes
    # latency: every phase, four measured steps, the first step apart
    lat = run.latency_ms
    for phase in (*PHASES, "step"):
        s = lat[phase]
        assert s["n"] == 4
        assert 0 <= s["min"] <= s["p50"] <= s["p90"] <= s["max"]
    assert lat["first_step"] > 0
    assert set(lat["first_step_phases"]) == set(PHASES)
    assert run.impl in ("loop", "foreach", "fused", "compiled")
    assert result.device["type"] == "cpu" and result.device["threads"] >= 1
    assert JobResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result  # the file between processes


def test_activation_probe_matches_the_estimate_exactly():
    """On the CPU the live-tensor tracker and the fake-tensor estimate see the same allocations."""
    from sgdsai_cli.measure.estimate import estimate_step
    from sgdsai_cli.precision import resolve_precision

    mem = worker.run_job(job("tiny-gpt2", "sgdsai", warmup=3, steps=1)).run.memory
    est = estimate_step(resolve_model("tiny-gpt2"), resolve_precision("fp32"), "sgdsai", 2, 16)
    assert mem.activation_peak_bytes == est.activation_peak_bytes
    assert mem.details["forward_backward_peak_bytes"] == est.forward_backward_peak_bytes
    assert mem.peak_allocated_bytes == est.peak_bytes


def test_run_job_reports_progress_events():
    """warmup 1 on the CPU runs three warmup steps (the first, a steady one, the probe), then the measured."""
    events = []
    worker.run_job(job(warmup=1, steps=2), on_event=lambda event, **fields: events.append((event, fields)))
    assert events[0] == ("start", {"total": 5, "warmup": 3, "steps": 2})
    assert [(f["step"], f["measured"]) for e, f in events[1:]] == [(1, False), (2, False), (3, False), (4, True),
                                                                   (5, True)]


# ----------------------------------------------------------------------------------------------
# steady state whatever warmup says; step counts bounded


@pytest.mark.parametrize(
    "warmup, device, ran, noted",
    [
        (0, "cpu", 3, True), (1, "cpu", 3, True), (2, "cpu", 3, True), (3, "cpu", 3, False), (7, "cpu", 7, False),
        (0, "cuda", 1, False), (1, "cuda", 1, False), (2, "cuda", 2, False), (5, "cuda", 5, False),
    ],
)
def test_warmup_steps_always_include_the_first_step_and_a_steady_one(warmup, device, ran, noted):
    assert training.warmup_steps(warmup, device) == ran
    note = training.warmup_note(warmup, device)
    assert (note is not None) == noted
    if noted:
        assert note.startswith(f"warmup {warmup} raised to 3: ")


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_small_warmup_still_measures_steady_steps(warmup):
    """Memory from a steady step (step >= 1) and the activation probe, never from the first step alone."""
    run = worker.run_job(job("tiny-gpt2", "sgdsai", warmup=warmup, steps=2)).run
    assert run.status == "ok", run.error
    phases = run.memory.details["phases"]
    assert set(phases) == set(PHASES) and all(p["steps"] >= 1 for p in phases.values())
    assert run.memory.activation_peak_bytes > 0 and run.memory.details["forward_backward_peak_bytes"] > 0
    assert run.latency_ms["step"]["n"] == 2 and run.latency_ms["first_step"] > 0
    assert f"warmup {warmup} raised to 3" in run.note


def test_warmup_0_measures_state_and_peak_exactly(in_process):
    """The issue's case: profile --device cpu --warmup 0 measured only the first step (estimate 6.9-20.7 % off)."""
    spec = ProfileSpec(model="tiny-gpt2", precision="fp32", device="cpu", batch_size=2, seq_len=16, warmup=0,
                       steps=2)
    result = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai", "adamw"], sampler=False).result
    assert result.spec.warmup == 3 and spec.warmup == 0  # the spec as run; the caller's left alone
    sgdsai, adamw = result.runs
    assert (sgdsai.status, adamw.status) == ("ok", "ok")
    assert adamw.memory.state_bytes == pytest.approx(2 * sgdsai.memory.state_bytes, rel=0.01)
    assert adamw.memory.peak_allocated_bytes > sgdsai.memory.peak_allocated_bytes
    for run in (sgdsai, adamw):
        errors = run.memory.details["estimate_error_pct"]
        assert errors["state_bytes"] == 0.0 and errors["activation_peak_bytes"] == 0.0
        assert "warmup 0 raised to 3" in run.note
    assert sgdsai.memory.details["estimate_error_pct"]["peak_bytes"] == 0.0
    # CPU loop AdamW: its per-parameter step counters (4 bytes each) fall within 0.01 % (as with warmup 3)
    assert abs(adamw.memory.details["estimate_error_pct"]["peak_bytes"]) < 0.01


HUGE = 99999999999999999999


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"steps": HUGE}, "steps", f"bad steps {HUGE} (must be at most {limits.MAX_STEPS})"),
        ({"steps": limits.MAX_STEPS + 1}, "steps", "bad steps 100001 (must be at most 100000)"),
        ({"warmup": HUGE}, "warmup", f"bad warmup {HUGE} (must be at most 100000)"),
        ({"warmup": 10**5000}, "warmup", "bad warmup <an integer of about 5001 digits> (must be at most 100000)"),
        ({"steps": 0}, "steps", "bad steps 0 (must be 1 or more)"),
        ({"warmup": -1}, "warmup", "bad warmup -1 (must be 0 or more)"),
        ({"steps": True}, "steps", "bad steps True (must be 1 or more)"),
    ],
)
def test_step_counts_are_bounded_before_any_work(tmp_path, monkeypatch, change, field, message):
    import dataclasses

    def no_child(job, on_event):
        raise AssertionError("a child was started")

    monkeypatch.setattr(child, "run_child", no_child)
    spec = dataclasses.replace(ProfileSpec(model="tiny-gpt2", device="cpu"), **change)
    out = tmp_path / "out"
    with pytest.raises(BadInput) as e:
        realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai"], out_dir=out)
    assert str(e.value) == message and "--" not in str(e.value)
    assert e.value.field == field and e.value.value is change[field]
    assert not out.exists()


def test_training_run_refuses_an_unbounded_job():
    """The worker on its own (a job not made by run_real): an error row, not a run that never ends."""
    run = worker.run_job(job(steps=HUGE)).run
    assert run.status == "error" and run.error == f"BadInput: bad steps {HUGE} (must be at most 100000)"


@pytest.mark.parametrize(
    "steps_ms, threads, warned",
    [
        ([10.0, 10.2, 9.9, 10.1, 10.0], 1, False),
        ([10.0, 10.0, 10.0, 10.0, 40.0], 2, True),  # p90/p50 = 2.8
        ([10.0], 2, False),  # one step: no spread to judge
    ],
)
def test_cpu_timing_records_threads_and_warns_on_a_wide_spread(steps_ms, threads, warned, monkeypatch):
    import types

    from sgdsai_cli.measure import memory_summary

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    times = {"forward": steps_ms, "backward": [0.0] * len(steps_ms), "optimizer_step": [0.0] * len(steps_ms),
             "zero_grad": [0.0] * len(steps_ms)}
    record, warning = memory_summary.timing(types.SimpleNamespace(is_cuda=False, times=times))
    assert record["threads"] == threads
    assert (warning is not None) == warned
    if warned:
        assert record["step_p90_over_p50"] == 2.8
        assert "OMP_NUM_THREADS=1" in warning and f"on {threads} threads" in warning
    assert memory_summary.timing(types.SimpleNamespace(is_cuda=True, times=times)) == (None, None)


def test_cpu_run_result_carries_timing():
    result = worker.run_job(job(warmup=3, steps=2))
    run = result.run
    assert run.to_dict()["timing"]["threads"] == torch.get_num_threads() == result.device["threads"]
    assert JobResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.parametrize(
    "phase, kind, only, status",
    [
        ("backward", "oom", None, "oom"),
        ("optimizer_step", "oom", "sgdsai", "oom"),
        ("optimizer_step", "oom", "adamw", "ok"),  # another optimizer's failure
        ("forward", "error", None, "error"),
    ],
)
def test_failures_are_results(monkeypatch, phase, kind, only, status):
    fail_at(monkeypatch, phase, kind, only)
    run = worker.run_job(job("tiny-gpt2", "sgdsai")).run
    assert run.status == status
    if status == "oom":
        assert run.error.startswith(f"out of memory in {phase} (step 1)")
        assert "OutOfMemoryError" in run.error
        assert run.memory.details["oom_phase"] == phase
        assert run.memory.peak_allocated_bytes > 0  # the peak before it
        assert run.latency_ms is None
    elif status == "error":
        assert run.error == f"RuntimeError: simulated failure in {phase}"
        assert "traceback:" in run.note
    else:
        assert run.error is None


@pytest.mark.parametrize(
    "values, q, expect",
    [
        ([5.0], 90, 5.0),
        ([1.0, 2.0, 3.0, 4.0, 10.0], 90, 7.6),  # linear between closest ranks, numpy's default
        ([1.0, 2.0, 3.0, 4.0, 10.0], 50, 3.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # unsorted input, even count: the mean of the middle two
        ([1.0, 2.0, 3.0, 4.0], 25, 1.75),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
    ],
)
def test_percentile(values, q, expect):
    import numpy as np

    assert stats.percentile(values, q) == pytest.approx(expect)
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@pytest.mark.parametrize(
    "values, expect",
    [
        ([5.0], {"p50": 5.0, "p90": 5.0, "min": 5.0, "max": 5.0, "n": 1}),
        ([1.0, 2.0, 3.0, 4.0, 10.0], {"p50": 3.0, "p90": 7.6, "min": 1.0, "max": 10.0, "n": 5}),
        ([], None),
    ],
)
def test_latency_summary(values, expect):
    got = stats.latency_summary(values)
    if expect is None:
        assert got is None
    else:
        assert got == pytest.approx(expect)


@pytest.mark.parametrize(
    "estimate, measured, expect",
    [
        ({"state_bytes": 110, "peak_bytes": 90}, {"state_bytes": 100, "peak_bytes": 100}, {"state_bytes": 10.0,
                                                                                           "peak_bytes": -10.0}),
        ({"state_bytes": 100}, {"state_bytes": None}, {}),
        ({"state_bytes": 100}, {"state_bytes": 0}, {}),
        ({"activation_peak_bytes": 3}, {"activation_peak_bytes": 4}, {"activation_peak_bytes": -25.0}),
    ],
)
def test_estimate_error_pct(estimate, measured, expect):
    assert compare.estimate_error_pct(estimate, measured) == expect


@pytest.mark.parametrize(
    "line, event",
    [
        (progress_line("step", step=3), {"event": "step", "step": 3}),
        ("some other output\n", None),
        ("@sgdsai not json\n", None),
        ("@sgdsai [1, 2]\n", None),
    ],
)
def test_parse_progress(line, event):
    assert parse_progress(line) == event


@pytest.mark.parametrize("name, stem", [("sgdsai", "sgdsai"), ("torch:SGD", "torch-SGD"), ("adamw-loop", "adamw-loop")])
def test_safe_name(name, stem):
    assert realrun.safe_name(name) == stem


# ----------------------------------------------------------------------------------------------
# devices: one resolution, one record, one free-memory reader, one OOM test


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answers")
@pytest.mark.parametrize(
    "text, auto, expect",
    [
        ("auto", "meta", "meta"),  # profile: sizing without a GPU
        ("auto", "cpu", "cpu"),  # gsnr, bench-step: real values without a GPU
        ("meta", "meta", "meta"),
        (" CPU ", "cpu", "cpu"),
        ("cpu", "meta", "cpu"),
    ],
)
def test_resolve_device(text, auto, expect):
    assert str(devices.resolve_device(text, auto=auto)) == expect


@pytest.mark.parametrize(
    "text, auto, error, field, message",
    [
        ("meta", "cpu", BadInput, "device", "device meta cannot time a step; choose from: auto, cpu, cuda, cuda:N"),
        ("tpu", "meta", BadInput, None, "unknown device 'tpu' (choose from: auto, meta, cpu, cuda, cuda:N)"),
        ("cuda:x", "cpu", BadInput, None, "unknown device 'cuda:x'"),
    ],
)
def test_resolve_device_refusals(text, auto, error, field, message):
    with pytest.raises(error) as e:
        devices.resolve_device(text, auto=auto, meta_refusal="time a step")
    assert str(e.value).startswith(message) and e.value.field == field and e.value.value == text
    assert "--" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_without_cuda_is_environment_unavailable_with_the_field():
    with pytest.raises(EnvironmentUnavailable, match="device 'cuda:1': CUDA is not available") as e:
        devices.resolve_device("cuda:1")
    assert (e.value.field, e.value.value, e.value.exit_code) == ("device", "cuda:1", 3)


def test_cpu_device_record_always_has_threads():
    rec = devices.device_record(torch.device("cpu"))
    assert set(rec) == {"type", "name", "total_memory_bytes", "uuid", "driver", "threads", "cpus", "load_avg"}
    assert rec["type"] == "cpu" and rec["threads"] == torch.get_num_threads() and rec["total_memory_bytes"] > 0
    assert devices.device_record(torch.device("meta"))["type"] == "meta"
    assert devices.free_bytes(torch.device("cpu")) > 0


@pytest.mark.parametrize(
    "error, oom",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
        (MemoryError(), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_oom(error, oom):
    assert devices.is_oom(error) is oom


# ----------------------------------------------------------------------------------------------
# run_real: checks, Ctrl-C, dead children, end to end


def test_cpu_too_small_is_environment_unavailable(monkeypatch):
    monkeypatch.setattr(devices, "free_bytes", lambda dev: 1 * 2**30)
    spec = ProfileSpec(model="gpt2", device="cpu")
    with pytest.raises(EnvironmentUnavailable) as e:
        realrun.check_device(spec, resolve_model("gpt2"), ["sgdsai", "adamw"])
    # 124,439,808 params x 4 bytes x (2 + 2 for AdamW) = 1.85 GiB
    assert str(e.value).startswith("device 'cpu': gpt2 in fp32 needs about 1.9 GiB")
    assert "1.0 GiB of RAM available" in str(e.value) and "--" not in str(e.value)
    assert (e.value.exit_code, e.value.field, e.value.value) == (3, "device", "cpu")


@pytest.mark.parametrize("optimizers, factor", [(["sgdsai"], 3), (["sgdsai", "adamw"], 4), (["sgd"], 3)])
def test_model_state_bytes_needed(optimizers, factor):
    assert realrun.model_state_bytes_needed(1000, 4, optimizers) == 1000 * 4 * factor


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        ({"optimizers": ["adamx"]}, ..., "unknown optimizer 'adamx'"),  # the registry's error, as it is
        ({"optimizers": []}, "optimizers", "no optimizers to run"),
        ({"sample_interval_ms": 0}, "sample_interval_ms", "sample_interval_ms 0 must be greater than zero"),
        ({"device": "meta"}, "device", "device meta cannot run a training step"),
    ],
)
def test_bad_requests_are_bad_input(kwargs, field, message):
    spec = ProfileSpec(model="tiny-gpt2", device=kwargs.pop("device", "cpu"))
    optimizers = kwargs.pop("optimizers", ["sgdsai"])
    with pytest.raises(BadInput, match=message) as e:
        realrun.run_real(spec, resolve_model("tiny-gpt2"), optimizers, **kwargs)
    assert field is ... or e.value.field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_without_cuda_is_environment_unavailable():
    with pytest.raises(EnvironmentUnavailable, match="CUDA is not available"):
        realrun.run_real(ProfileSpec(model="tiny-gpt2", device="cuda"), resolve_model("tiny-gpt2"), ["sgdsai"])


def test_ctrl_c_keeps_finished_runs(monkeypatch):
    """The second child is interrupted: the first run stays, the rest are skipped, no crash."""
    calls = []

    def fake_run_child(job, on_event):
        calls.append(job.optimizer)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return worker.run_job(job)

    monkeypatch.setattr(child, "run_child", fake_run_child)
    seen: list[Progress] = []
    spec = ProfileSpec(model="tiny-gpt2", device="cpu", batch_size=2, seq_len=16, warmup=1, steps=2)
    real = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai", "adamw", "sgd"], on_progress=seen.append)
    result = real.result
    assert result.interrupted is True and result.to_dict()["interrupted"] is True
    assert [(r.optimizer, r.status) for r in result.runs] == [("sgdsai", "ok"), ("adamw", "skipped"),
                                                              ("sgd", "skipped")]
    assert "interrupted" in result.runs[1].error
    assert result.model.params == 141_056
    assert [(p.task, p.stage) for p in seen] == [("sgdsai", "starting"), ("sgdsai", "ok"), ("adamw", "starting"),
                                                 ("adamw", "interrupted")]
    json.dumps(result.to_dict(), allow_nan=False)


def test_dead_worker_is_an_error_row(monkeypatch):
    monkeypatch.setattr(child, "child_command",
                        lambda: [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    spec = ProfileSpec(model="tiny-gpt2", device="cpu", batch_size=2, seq_len=16, warmup=1, steps=1)
    result = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai"], estimate=False).result
    run = result.runs[0]
    assert run.status == "error"
    assert run.error == "worker process died (exit status 3): boom"
    assert result.environment.device["type"] == "cpu" and "threads" in result.environment.device
    assert result.model.params == 141_056  # from a meta build


def test_run_real_end_to_end_with_oom_samples_and_estimate(tmp_path, monkeypatch):
    """Two spawned children: sgdsai runs, adamw hits an (injected) OOM; the result, CSVs, progress."""
    script = tmp_path / "failing_worker.py"
    script.write_text(FAILURE_SCRIPT.format(optimizer="adamw", phase="optimizer_step"), encoding="utf-8")
    monkeypatch.setattr(child, "child_command", lambda: [sys.executable, str(script)])
    seen: list[Progress] = []
    spec = ProfileSpec(model="tiny-gpt2", precision="fp32", device="cpu", batch_size=2, seq_len=16, warmup=3,
                       steps=2)
    real = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai", "adamw"], out_dir=tmp_path,
                            sample_interval_ms=5, on_progress=seen.append)
    doc = real.result.to_dict()
    assert doc["kind"] == "profile" and doc["spec"]["device"] == "cpu"
    assert doc["environment"]["device"]["type"] == "cpu"
    ok, oom = real.result.runs
    assert (ok.optimizer, ok.status) == ("sgdsai", "ok")
    assert (oom.optimizer, oom.status) == ("adamw", "oom")
    # the estimate beside the OOM, and the estimate error where both exist
    assert oom.memory.estimated_peak_bytes > 0
    assert oom.memory.details["oom_phase"] == "optimizer_step"
    errors = ok.memory.details["estimate_error_pct"]
    assert errors["state_bytes"] == 0.0 and errors["param_bytes"] == 0.0
    assert errors["activation_peak_bytes"] == 0.0 and errors["peak_bytes"] == 0.0
    assert ok.memory.estimated_peak_bytes == ok.memory.peak_allocated_bytes
    # progress: every step of the run that finished, then its status
    sgdsai = [(p.completed, p.total, p.stage) for p in seen if p.task == "sgdsai"]
    assert sgdsai[:2] == [(None, None, "starting"), (0, 5, "warmup")]
    assert sgdsai[-3:] == [(4, 5, "measured"), (5, 5, "measured"), (5, 5, "ok")]
    assert [p.stage for p in seen if p.task == "adamw"][-1] == "oom"
    # samples: the paths of the result, nothing drawn
    import pandas as pd

    assert real.samples_csv == {"sgdsai": tmp_path / "samples-sgdsai.csv", "adamw": tmp_path / "samples-adamw.csv"}
    samples = pd.read_csv(real.samples_csv["sgdsai"])
    assert len(samples) >= 1
    assert {"t_s", "phase", "allocated_bytes", "rss_bytes"} <= set(samples.columns)
    assert samples["rss_bytes"].max() > 0
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.svg"))
    json.dumps(doc, allow_nan=False)


def test_cli_profile_cpu_writes_json_and_plots(tmp_path):
    """The issue's 'done when': sgdsai profile --model tiny-gpt2 --device cpu --steps 5 --out DIR --json r.json."""
    from typer.testing import CliRunner

    from sgdsai_cli.cli import app

    out, rjson = tmp_path / "out", tmp_path / "r.json"
    res = CliRunner().invoke(app, ["profile", "--model", "tiny-gpt2", "--device", "cpu", "--steps", "5",
                                   "--batch-size", "2", "--seq-len", "16", "--warmup", "1", "--optimizer", "sgdsai",
                                   "--out", str(out), "--json", str(rjson), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads(rjson.read_text())
    assert [(r["optimizer"], r["status"]) for r in doc["runs"]] == [("sgdsai", "ok")]
    assert all(r["memory"]["source"] == "measured" for r in doc["runs"])
    assert all(r["latency_ms"]["optimizer_step"]["n"] == 5 for r in doc["runs"])
    assert {p.name for p in Path(out).iterdir()} >= {"latency.png", "memory-over-time.svg", "state-by-key.png",
                                                      "samples-sgdsai.csv", "result.json"}


# ----------------------------------------------------------------------------------------------
# GPU paths (scripts/gpu-check.sh runs these with `pytest -m gpu`)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def cuda_job(*args, **kwargs) -> Job:
    import dataclasses

    j = job(*args, **kwargs)
    j.spec = dataclasses.replace(j.spec, device="cuda")
    return j


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_run_measures_allocator_and_state(precision, tmp_path):
    j = cuda_job("tiny-gpt2", "adamw", precision, warmup=3, steps=5, samples_csv=str(tmp_path / "s.csv"),
                 snapshot_path=str(tmp_path / "snap.pickle"))
    result = worker.run_job(j)
    run = result.run
    assert run.status == "ok", run.error
    mem = run.memory
    meta = meta_memory("tiny-gpt2", precision, "adamw")
    assert mem.state_bytes_by_key == meta.state_bytes_by_key
    assert mem.peak_reserved_bytes >= mem.peak_allocated_bytes > mem.state_bytes
    assert mem.details["allocator_backend"] in ("native", "cudaMallocAsync")
    assert mem.details["num_ooms"] == 0
    assert {"active_peak_bytes", "reserved_peak_bytes"} <= set(mem.details["phases"]["backward"])
    assert run.latency_ms["optimizer_step"]["n"] == 5
    assert result.device["type"] == "cuda" and result.device["total_memory_bytes"] > 0
    assert result.device["uuid"].startswith(("GPU-", "MIG-"))
    assert result.snapshot and Path(result.snapshot).stat().st_size > 0
    assert Path(result.samples_csv).stat().st_size > 0


@pytest.mark.gpu
@needs_cuda
def test_cuda_run_without_nvml_is_a_note(monkeypatch):
    from sgdsai_cli.measure import sampler as smp

    def fail():
        raise ImportError("no pynvml")

    monkeypatch.setattr(smp, "_import_pynvml", fail)
    run = worker.run_job(cuda_job("tiny-gpt2", "sgdsai", warmup=1, steps=2)).run
    assert run.status == "ok"
    assert run.memory.nvml_used_peak_bytes is None
    assert "NVML unavailable" in run.note


@pytest.mark.gpu
@needs_cuda
def test_cuda_injected_oom_keeps_peak(monkeypatch):
    fail_at(monkeypatch, "optimizer_step")
    run = worker.run_job(cuda_job("tiny-gpt2", "adamw", warmup=2, steps=2)).run
    assert run.status == "oom"
    assert run.memory.details["oom_phase"] == "optimizer_step"
    assert run.memory.peak_allocated_bytes > 0


def test_real_renderables_tables():
    from rich.console import Console

    from sgdsai_cli.render.real import estimate_rows, phase_rows, real_renderables

    mem = {"source": "measured", "param_bytes": 100, "state_bytes": 200, "peak_allocated_bytes": 1000,
           "details": {"phases": {"forward": {"before_bytes": 300, "allocated_peak_bytes": 900,
                                              "reserved_peak_bytes": 2048}},
                       "estimate": {"state_bytes": 200, "peak_bytes": 1100},
                       "estimate_error_pct": {"state_bytes": 0.0, "peak_bytes": 10.0},
                       "allocator_backend": "native", "num_ooms": 0}}
    doc = {"spec": {"model": "gpt2", "precision": "bf16", "device": "cuda"}, "model": {"name": "gpt2"},
           "runs": [{"optimizer": "sgdsai", "impl": "foreach", "status": "ok", "memory": mem, "note": "NVML v1"},
                    {"optimizer": "adamw", "impl": None, "status": "oom", "memory": {"source": "meta"}}]}
    assert phase_rows(doc) == [{"optimizer": "sgdsai", "phase": "forward", "before_bytes": 300, "peak_bytes": 900,
                                "reserved_peak_bytes": 2048}]
    assert [(r["component"], r["estimate_bytes"], r["measured_bytes"], r["error_pct"]) for r in estimate_rows(doc)] \
        == [("state", 200, 200, 0.0), ("peak", 1100, 1000, 10.0)]
    console = Console(width=160, record=True)
    for item in real_renderables(doc):
        console.print(item)
    text = console.export_text()
    assert "Memory by phase" in text and "+10.0" in text and "native" in text and "NVML v1" in text
    meta_only = {**doc, "runs": [{"optimizer": "x", "impl": None, "status": "ok", "memory": {"source": "meta"}}]}
    assert real_renderables(meta_only) == []


@pytest.mark.parametrize(
    "optimizer, impl, name",
    [("adamw", "loop", "adamw-loop"), ("adamw", "foreach", "adamw-foreach"), ("adamw", None, "adamw"),
     ("sgdsai", "compiled", "sgdsai"), ("adamw-fused", "fused", "adamw-fused")],
)
def test_estimate_name_follows_the_impl_that_ran(optimizer, impl, name):
    assert compare.estimate_name(optimizer, impl) == name
