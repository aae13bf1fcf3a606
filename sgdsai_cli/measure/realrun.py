"""Real runs on the CPU or a CUDA device: one child process per optimizer, a typed result.

    real = run_real(spec, model_spec, ["sgdsai", "adamw"], sample_interval_ms=10, out_dir=Path("out"))
    real.result            # ProfileResult (to_dict() = the profile JSON document)
    real.samples_csv       # optimizer -> its samples CSV (for figures)

Each optimizer runs in its own fresh process (``child.run_child``), so every run starts from a
clean allocator with nothing left over from the previous one. Progress is reported through
``on_progress``: one task per optimizer, ``completed`` steps out of ``total``, stage "starting",
"warmup", "measured", then the run's status. Nothing here prints or draws.

Failures are results: running out of memory is ``status: "oom"`` (the phase and the peak before
it in ``memory.details``), any other failure ``status: "error"`` with the message, and the other
optimizers still run. Ctrl-C (a ``KeyboardInterrupt``; the command line raises one for SIGTERM
too, its message naming the signal) stops the running child's whole process group, keeps the runs
already finished, marks the others ``skipped`` and sets ``result.interrupted`` so the caller can
write the result and exit 130 (143 for SIGTERM).

Steady state only: the first step (optimizer state allocation) is never the measured figure. On
the CPU memory is read in tracked warmup steps, so a ``spec.warmup`` below
``training.CPU_MIN_WARMUP`` is raised to it: the result's spec says the warmup that ran and each
run says so in its note. ``spec.steps`` and ``spec.warmup`` are at most ``limits.MAX_STEPS``,
checked before anything starts. On the CPU each run records ``timing`` (the torch threads, the
step p90/p50) and a note when the step times vary widely (``stats.spread_warning``).

Each run is put beside the no-GPU estimate (``compare``) unless ``estimate=False``. The samples
CSV of each run goes to ``samples_dir/samples-<optimizer>.csv`` (default ``out_dir``; nowhere when
both are None), a CUDA memory snapshot (``snapshot=True``) to ``out_dir/snapshot-<optimizer>.pickle``
(open it at https://pytorch.org/memory_viz).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.measure import child, devices
from sgdsai_cli.measure.compare import compare_with_estimates
from sgdsai_cli.measure.job import Job, JobResult
from sgdsai_cli.measure.limits import check_steps_and_warmup
from sgdsai_cli.measure.training import warmup_note, warmup_steps
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.progress import Progress, ProgressCallback, report_to
from sgdsai_cli.results import Environment, ProfileResult, ProfileSpec, RunResult

SNAPSHOT_NEEDS_OUT = "snapshot needs an output folder (out_dir): not written"


@dataclass
class RealRun:
    """A real run's result and the files written beside it (optimizer -> path)."""

    result: ProfileResult
    samples_csv: dict[str, Path] = field(default_factory=dict)
    snapshots: dict[str, Path] = field(default_factory=dict)


def safe_name(optimizer: str) -> str:
    """'torch:SGD' -> 'torch-SGD': an optimizer name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", optimizer).strip("-") or "run"


# ----------------------------------------------------------------------------------------------
# checks before anything starts


def model_state_bytes_needed(params: int, bytes_per_param: int, optimizers: list[str]) -> int:
    """params x bytes x (2 + state buffers): parameters, gradients and the largest optimizer state."""
    from sgdsai_cli.optim.registry import state_buffers

    buffers = max((state_buffers(o) for o in optimizers), default=0)
    return params * bytes_per_param * (2 + buffers)


def check_device(spec: ProfileSpec, model_spec, optimizers: list[str]) -> torch.device:
    """The device to run on; EnvironmentUnavailable (exit 3) when it cannot run this at all.

    On the CPU, parameters, gradients and the largest optimizer state must fit in the RAM
    available. On CUDA running out of memory is a result (status "oom"), not a refusal.
    """
    dev = devices.resolve_device(spec.device, auto="cpu", meta_refusal="run a training step (it has no values)")
    if dev.type != "cpu":
        return dev
    from sgdsai_cli.models import build_model, count_params

    precision = resolve_precision(spec.precision)
    params = model_spec.params
    if params is None:
        params = count_params(build_model(model_spec, device="meta", dtype=precision.param_dtype))
    need = model_state_bytes_needed(params, precision.bytes_per_param, optimizers)
    have = devices.free_bytes(dev)
    if have is not None and need > have:
        raise EnvironmentUnavailable(
            f"device '{spec.device}': {model_spec.name} in {spec.precision} needs about {need / 2**30:.1f} GiB for "
            f"parameters, gradients and optimizer state, more than the {have / 2**30:.1f} GiB of RAM available; "
            "sizing on the meta device needs none", field="device", value=spec.device)
    return dev


def _check(spec: ProfileSpec, model_spec, optimizers: list[str], sample_interval_ms: float) -> torch.device:
    from sgdsai_cli.optim.registry import resolve_optimizer

    check_steps_and_warmup(spec.steps, spec.warmup)
    if not optimizers:
        raise BadInput("no optimizers to run", field="optimizers")
    for name in optimizers:
        resolve_optimizer(name)
    if isinstance(sample_interval_ms, bool) or not isinstance(sample_interval_ms, (int, float)) \
            or not sample_interval_ms > 0:
        raise BadInput(f"sample_interval_ms {sample_interval_ms!r} must be greater than zero",
                       field="sample_interval_ms", value=sample_interval_ms)
    return check_device(spec, model_spec, optimizers)


def _make_dirs(*dirs: Path | None) -> None:
    for d in dict.fromkeys(d for d in dirs if d is not None):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"cannot create output folder '{d}': {e.strerror or e}") from None


# ----------------------------------------------------------------------------------------------
# the runs


def _run_one(job: Job, say: ProgressCallback) -> JobResult:
    """One child, its progress events as Progress of task ``job.optimizer``."""
    name = job.optimizer
    seen = {"completed": None, "total": None}

    def on_event(event: dict) -> None:
        if event.get("event") == "start":
            seen.update(completed=0, total=event.get("total"))
            say(Progress(name, 0, seen["total"], "warmup"))
        elif event.get("event") == "step":
            seen.update(completed=event.get("step"), total=event.get("total", seen["total"]))
            say(Progress(name, seen["completed"], seen["total"], "measured" if event.get("measured") else "warmup"))

    say(Progress(name, None, None, "starting"))
    try:
        result = child.run_child(job, on_event)
    except KeyboardInterrupt:
        say(Progress(name, seen["completed"], seen["total"], "interrupted"))
        raise
    try:
        say(Progress(name, seen["completed"], seen["total"], result.run.status))
    except KeyboardInterrupt as e:  # the run is finished: the caller keeps it
        e.job_result = result
        raise
    return result


def _jobs(spec: ProfileSpec, model_spec, optimizers: list[str], *, sample_interval_ms: float, sampler: bool,
          samples_dir: Path | None, out_dir: Path | None, snapshot: bool, progress: bool) -> list[Job]:
    def path(folder: Path | None, prefix: str, name: str, ext: str) -> str | None:
        return str((folder / f"{prefix}-{safe_name(name)}.{ext}").resolve()) if folder is not None else None

    return [Job(spec=spec, model_spec=model_spec, optimizer=name, sample_interval_ms=sample_interval_ms,
                sampler=sampler, samples_csv=path(samples_dir, "samples", name, "csv"),
                snapshot_path=path(out_dir, "snapshot", name, "pickle") if snapshot else None, progress=progress)
            for name in optimizers]


def _why(e: KeyboardInterrupt) -> str:
    """What stopped the run: the interrupt's message when a signal handler gave one (SIGTERM), else Ctrl-C."""
    return str(e) or "Ctrl-C"


@dataclass
class _Collected:
    runs: list[RunResult] = field(default_factory=list)
    results: list[JobResult] = field(default_factory=list)
    interrupted: bool = False


def _run_all(jobs: list[Job], say: ProgressCallback, snapshot_without_out: bool, note: str | None) -> _Collected:
    got = _Collected()
    for i, job in enumerate(jobs):
        try:
            result = _run_one(job, say)
        except KeyboardInterrupt as e:
            got.interrupted = True
            finished = getattr(e, "job_result", None)  # the child had written its result: keep it
            if finished is not None:
                _keep(got, finished, snapshot_without_out, note)
            got.runs += [RunResult(rest.optimizer, None, status="skipped",
                                   error=f"interrupted ({_why(e)}) before this run finished")
                         for rest in jobs[i + (finished is not None):]]
            break
        _keep(got, result, snapshot_without_out, note)
    return got


def _keep(got: _Collected, result: JobResult, snapshot_without_out: bool, note: str | None) -> None:
    run = result.run
    run.add_note(note)
    if snapshot_without_out:
        run.add_note(SNAPSHOT_NEEDS_OUT)
    if result.snapshot:
        if run.memory is not None:
            run.memory.details["snapshot"] = result.snapshot
    got.runs.append(run)
    got.results.append(result)


def _assemble(spec: ProfileSpec, model_spec, dev: torch.device, got: _Collected) -> RealRun:
    from sgdsai_cli.measure.sizing import meta_model, model_info

    info = next((r.model for r in got.results if r.model is not None), None)
    if info is None:
        info = model_info(meta_model(model_spec, resolve_precision(spec.precision)), model_spec)
    device = next((r.device for r in got.results if r.device), None)
    if device is None:
        try:
            device = devices.device_record(dev)
        except Exception:  # a CUDA device that cannot be queried any more: say what is known
            device = {"type": dev.type, "name": None, "total_memory_bytes": None, "uuid": None, "driver": None}
    result = ProfileResult(spec, info, got.runs, Environment.current(device), interrupted=got.interrupted)
    return RealRun(result=result,
                   samples_csv={r.run.optimizer: Path(r.samples_csv) for r in got.results if r.samples_csv},
                   snapshots={r.run.optimizer: Path(r.snapshot) for r in got.results if r.snapshot})


def run_real(spec: ProfileSpec, model_spec, optimizers: list[str], *, sample_interval_ms: float = 10.0,
             out_dir: Path | None = None, samples_dir: Path | None = None, snapshot: bool = False,
             sampler: bool = True, estimate: bool = True, on_progress: ProgressCallback | None = None) -> RealRun:
    """Train ``model_spec`` for real with each optimizer in turn (see the module docstring).

    ``spec.device`` is ``cpu``, ``cuda`` or ``cuda:N``. ``sampler=False`` turns the sampler thread
    off (NVML peaks then stay null); ``estimate=False`` skips the estimate comparison. Raises
    BadInput or EnvironmentUnavailable before starting when the request or the device cannot do
    it; after that, failures are run results.
    """
    dev = _check(spec, model_spec, optimizers, sample_interval_ms)
    note = warmup_note(spec.warmup, dev.type)
    if note:  # the spec as run: the figures and the plots follow the warmup that ran
        spec = dataclasses.replace(spec, warmup=warmup_steps(spec.warmup, dev.type))
    out_dir = Path(out_dir) if out_dir is not None else None
    samples_dir = Path(samples_dir) if samples_dir is not None else out_dir
    _make_dirs(out_dir, samples_dir)
    say = report_to(on_progress)
    jobs = _jobs(spec, model_spec, optimizers, sample_interval_ms=sample_interval_ms, sampler=sampler,
                 samples_dir=samples_dir, out_dir=out_dir, snapshot=snapshot, progress=on_progress is not None)
    got = _run_all(jobs, say, snapshot and out_dir is None and dev.type == "cuda", note)
    if estimate and not got.interrupted:
        try:
            compare_with_estimates(got.runs, spec, model_spec)
        except KeyboardInterrupt as e:  # Ctrl-C during the estimate: keep the measured runs
            got.interrupted = True
            for run in got.runs:
                run.add_note(f"estimate interrupted ({_why(e)})")
    try:
        return _assemble(spec, model_spec, dev, got)
    except KeyboardInterrupt:  # building the result (no side effects): the runs are kept, built again
        got.interrupted = True
        return _assemble(spec, model_spec, dev, got)
