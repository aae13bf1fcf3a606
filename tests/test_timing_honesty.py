"""CPU timings say how they were taken: torch threads (``bench-step --threads N``), usable CPUs and the
load average; a wide spread is a warning that says how to get a stable figure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure import devices, realrun, stats
from sgdsai_cli.measure.bench import BenchSpec, bench_step
from sgdsai_cli.models import resolve_model
from sgdsai_cli.results import ProfileSpec

SPEC = BenchSpec(model="tiny-gpt2", device="cpu", optimizers=("sgdsai", "adamw-fused"), warmup=0, steps=2)


def test_cpu_load_is_recorded():
    load = devices.cpu_load()
    assert isinstance(load["cpus"], int) and load["cpus"] >= 1
    assert len(load["load_avg"]) == 3 and all(x >= 0 for x in load["load_avg"])
    record = devices.device_record(torch.device("cpu"))
    assert {"threads", "cpus", "load_avg"} <= set(record)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_bench_step_threads_are_set_for_the_measurement_and_recorded(threads):
    before = torch.get_num_threads()
    result = bench_step(dataclasses.replace(SPEC, threads=threads))
    used = threads if threads is not None else before
    doc = result.to_dict()
    assert doc["spec"]["threads"] == used
    assert doc["environment"]["device"]["threads"] == used
    assert all(r["details"]["threads"] == used for r in doc["rows"])
    assert torch.get_num_threads() == before  # restored: the library changes no global setting


@pytest.mark.parametrize("threads, message", [
    (0, "threads 0 must be a whole number of at least 1"),
    (-3, "threads -3 must be"),
    (True, "threads True must be"),
    ("2", "threads '2' must be"),
])
def test_bench_step_bad_threads(threads, message):
    with pytest.raises(BadInput, match=message) as e:
        bench_step(dataclasses.replace(SPEC, threads=threads))
    assert e.value.field == "threads"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_step_threads_on_cuda_are_refused():
    with pytest.raises(BadInput, match="torch threads set the CPU's step"):
        bench_step(dataclasses.replace(SPEC, device="cuda", threads=2))


@pytest.mark.parametrize("args, code, text", [
    (["--threads", "0"], 2, "error: bad --threads '0' (must be at least 1)"),
    (["--threads", "x"], 2, "error: bad --threads 'x' (must be a whole number)"),
    (["--threads", "1", "--format", "json"], 0, '"threads": 1'),
])
def test_bench_step_threads_option(cli, args, code, text):
    r = cli("bench-step", "--model", "tiny-gpt2", "--device", "cpu", "--steps", "2", "--warmup", "0", *args)
    assert r.exit_code == code, r.output
    assert text in r.output


@pytest.mark.parametrize("steps, ratios, threads, load, hint, expected", [
    ([1.0] * 9 + [9.0], (), 4, (3.72, 2), stats.STABLE_HINT,
     "timings vary widely (step p90/p50 1.80, above 1.5) on 4 threads, load average 3.72 on 2 CPUs: the CPU is "
     "shared or oversubscribed; for a stable figure run on a quiet machine with OMP_NUM_THREADS=1"),
    ([1.0, 1.0], [0.2, 0.9], 1, (0.5, None), stats.QUIET_HINT,
     "timings vary widely (ratio range 0.20-0.90 over 2 rounds, above 1.5) on 1 thread, load average 0.50: the CPU "
     "is shared or oversubscribed; for a stable figure run on a quiet machine (the load average says how busy this "
     "one was)"),
    ([1.0] * 10, [0.5, 0.6], 2, (9.0, 2), stats.BENCH_HINT, None),  # steady: no warning, however loaded
    ([1.0] * 9 + [9.0], (), 2, (None, 2), stats.BENCH_HINT,  # no load average on this OS
     "timings vary widely (step p90/p50 1.80, above 1.5) on 2 threads: the CPU is shared or oversubscribed; for a "
     "stable figure run on a quiet machine with --threads 1 (or OMP_NUM_THREADS=1)"),
])
def test_spread_warning_says_the_load_and_how_to_get_a_stable_figure(steps, ratios, threads, load, hint, expected):
    assert stats.spread_warning(steps, ratios, threads, load=load, hint=hint) == expected


def test_a_real_cpu_run_records_threads_and_load(in_process):
    spec = ProfileSpec(model="tiny-gpt2", precision="fp32", device="cpu", batch_size=1, seq_len=16, warmup=3, steps=2)
    result = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai"], sampler=False, estimate=False).result
    timing = result.runs[0].to_dict()["timing"]
    assert timing["threads"] == torch.get_num_threads()
    assert timing["cpus"] >= 1 and len(timing["load_avg"]) == 3
    assert {"cpus", "load_avg"} <= set(result.environment.device)
