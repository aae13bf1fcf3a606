"""Real runs on the CPU or a CUDA device: one child process per optimizer, results as JSON.

    doc = profile_real(spec, model_spec, ["sgdsai", "adamw"], sample_interval_ms=10,
                       out_dir=Path("out"), snapshot=False, quiet=True)

Each optimizer runs in its own fresh process (``python -m sgdsai_cli.measure.worker JOB RESULT``), so
every run starts from a clean allocator with nothing left over from the previous one. The child
reports progress as ``@sgdsai {...}`` lines on stdout (a rich progress bar per optimizer on
stderr unless ``quiet``) and writes its result as JSON to a temp file; the parent assembles the
DESIGN.md profile document (``results.profile_document``).

Failures are results: a CUDA out-of-memory is ``status: "oom"`` (the phase and the peak before
it in ``memory.details``), any other failure ``status: "error"`` with the message, and the other
optimizers still run. Ctrl-C stops the running child, keeps the runs already finished, marks the
others ``skipped`` and sets ``doc["interrupted"] = True`` so the caller can write the JSON and
exit 130.

Estimate against measurement: where the no-GPU estimate (``sizing.profile_meta`` or
``estimate.estimate_step``) is importable, each run's ``memory.estimated_peak_bytes`` is filled
and ``memory.details["estimate"]`` / ``["estimate_error_pct"]`` give the estimate and its error
per component, ``100 * (estimate - measured) / measured``. An OOM run shows the estimate beside
the peak it reached.

With ``out_dir`` the samples of each run go to ``out_dir/samples-<optimizer>.csv``, a memory
snapshot (``snapshot=True``, CUDA) to ``out_dir/snapshot-<optimizer>.pickle`` (open it at
https://pytorch.org/memory_viz), and the figures of ``plots.profile_plots`` beside them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.results import ModelInfo, ProfileSpec, RunResult, profile_document, to_plain

# Optimizer state per parameter, in units of the parameter's bytes (for the CPU RAM check).
STATE_FACTOR = {"sgdsai": 1, "sgdsai-ref": 1, "sgd": 1, "adafactor": 0}
ESTIMATE_COMPONENTS = ("param_bytes", "grad_bytes", "state_bytes", "activation_peak_bytes",
                       "forward_backward_peak_bytes", "step_transient_bytes", "peak_bytes")


def safe_name(optimizer: str) -> str:
    """'torch:SGD' -> 'torch-SGD': an optimizer name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", optimizer).strip("-") or "run"


# ----------------------------------------------------------------------------------------------
# checks before anything starts


def _available_ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def model_state_bytes_needed(params: int, bytes_per_param: int, optimizers: list[str]) -> int:
    """params x bytes x (2 + state factor): parameters, gradients and the largest optimizer state."""
    factor = max((STATE_FACTOR.get(o, 2) for o in optimizers), default=2)
    return params * bytes_per_param * (2 + factor)


def check_device(spec: ProfileSpec, model_spec, optimizers: list[str]) -> None:
    """EnvironmentUnavailable (exit 3) when the device cannot run this at all."""
    from sgdsai_cli.precision import resolve_precision

    device = spec.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentUnavailable(f"--device {device}: CUDA is not available on this machine "
                                         f"(torch {torch.__version__}); use --device cpu or meta")
        if ":" in device:
            try:
                idx = int(device.split(":", 1)[1])
            except ValueError:
                raise BadInput(f"bad device '{device}' (use cpu, cuda or cuda:N)") from None
            count = torch.cuda.device_count()
            if not 0 <= idx < count:
                raise EnvironmentUnavailable(f"--device {device}: this machine has {count} CUDA device(s)")
        return
    if device != "cpu":
        raise BadInput(f"profile_real runs on cpu or cuda[:N], not '{device}'")
    precision = resolve_precision(spec.precision)
    params = model_spec.params
    if params is None:
        from sgdsai_cli.models import build_model, count_params

        params = count_params(build_model(model_spec, device="meta", dtype=precision.param_dtype))
    need = model_state_bytes_needed(params, precision.bytes_per_param, optimizers)
    have = _available_ram_bytes()
    if have is not None and need > have:
        raise EnvironmentUnavailable(
            f"--device cpu: {model_spec.name} in {spec.precision} needs about {need / 2**30:.1f} GiB for parameters, "
            f"gradients and optimizer state, more than the {have / 2**30:.1f} GiB of RAM available; "
            f"use --device meta for sizing")


# ----------------------------------------------------------------------------------------------
# estimates


def _estimates(spec: ProfileSpec, model_spec, optimizers: list[str]) -> tuple[dict[str, dict], str | None]:
    """optimizer -> {component: bytes} from the no-GPU estimate; (results, note on failure)."""
    out: dict[str, dict] = {}
    try:
        from sgdsai_cli.measure import sizing  # noqa: F401
        from sgdsai_cli.measure.sizing import profile_meta
    except ImportError:
        profile_meta = None
    try:
        if profile_meta is not None:
            meta_spec = ProfileSpec(**{**to_plain(spec), "device": "meta"})
            doc = profile_meta(meta_spec, model_spec, optimizers, estimate=True)
            for run in doc.get("runs", []):
                mem = run.get("memory") or {}
                d = {k: mem.get(k) for k in ESTIMATE_COMPONENTS if mem.get(k) is not None}
                d["peak_bytes"] = mem.get("estimated_peak_bytes", d.get("peak_bytes"))
                fb = (mem.get("details") or {}).get("forward_backward_peak_bytes")
                if fb is not None:
                    d["forward_backward_peak_bytes"] = fb
                out[run["optimizer"]] = {k: v for k, v in d.items() if v is not None}
            return out, None
        from sgdsai_cli.measure.estimate import estimate_step
        from sgdsai_cli.precision import resolve_precision

        precision = resolve_precision(spec.precision)
        for opt in optimizers:
            est = estimate_step(model_spec, precision, opt, spec.batch_size, spec.seq_len)
            out[opt] = {k: getattr(est, k) for k in ESTIMATE_COMPONENTS}
        return out, None
    except ImportError:
        return {}, "no estimate to compare with (estimate module not available)"
    except Exception as e:  # the comparison is extra: never fail a real run for it
        return out, f"estimate failed ({e.__class__.__name__}: {e})"


def estimate_name(optimizer: str, impl: str | None) -> str:
    """The optimizer to estimate for a run: plain ``adamw`` as the implementation that ran.

    The estimate follows torch's CUDA default path (foreach AdamW, a full-size temporary); on the
    CPU torch's default is the per-tensor loop, so a CPU ``adamw`` run is compared with
    ``adamw-loop``.
    """
    if optimizer == "adamw" and impl in ("loop", "foreach", "fused"):
        return f"adamw-{impl}"
    return optimizer


def _measured_components(mem: dict) -> dict[str, int | None]:
    details = mem.get("details") or {}
    return {
        "param_bytes": mem.get("param_bytes"),
        "grad_bytes": mem.get("grad_bytes"),
        "state_bytes": mem.get("state_bytes"),
        "activation_peak_bytes": mem.get("activation_peak_bytes"),
        "forward_backward_peak_bytes": details.get("forward_backward_peak_bytes"),
        "step_transient_bytes": mem.get("step_transient_bytes"),
        "peak_bytes": mem.get("peak_allocated_bytes"),
    }


def estimate_error_pct(estimate: dict, measured: dict) -> dict[str, float]:
    """100 * (estimate - measured) / measured for each component both have (measured > 0)."""
    out = {}
    for k in ESTIMATE_COMPONENTS:
        e, m = estimate.get(k), measured.get(k)
        if e is not None and m:
            out[k] = round(100.0 * (e - m) / m, 3)
    return out


def attach_estimate(run: dict, estimate: dict | None) -> None:
    """Put the estimate beside the measurement in ``run["memory"]`` (in place)."""
    if not estimate:
        return
    mem = run.setdefault("memory", None) or {}
    run["memory"] = mem
    mem.setdefault("source", "measured")
    mem["estimated_peak_bytes"] = estimate.get("peak_bytes")
    details = mem.setdefault("details", {})
    details["estimate"] = dict(estimate)
    if run.get("status") == "ok":
        details["estimate_error_pct"] = estimate_error_pct(estimate, _measured_components(mem))


# ----------------------------------------------------------------------------------------------
# children


class _Progress:
    """A rich progress bar per optimizer on stderr (nothing when quiet)."""

    def __init__(self, quiet: bool):
        self.bar = None
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[stage]}"), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def task(self, name: str):
        return None if self.bar is None else self.bar.add_task(name, total=None, stage="starting")

    def update(self, task, event: dict) -> None:
        if self.bar is None or task is None:
            return
        if event.get("event") == "start":
            self.bar.update(task, total=event.get("total"), completed=0, stage="warmup")
        elif event.get("event") == "step":
            self.bar.update(task, completed=event.get("step"),
                            stage="measured" if event.get("measured") else "warmup")

    def finish(self, task, status: str) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, stage=status)


def _child_command() -> list[str]:
    return [sys.executable, "-m", "sgdsai_cli.measure.worker"]


def run_child(job: dict, progress: _Progress, task) -> dict:
    """Run one job in a fresh process; the worker's result dict (an error record if it died)."""
    from sgdsai_cli.measure.worker import parse_progress

    with tempfile.TemporaryDirectory(prefix="sgdsai-run-") as tmp:
        job_path, result_path, err_path = (Path(tmp) / n for n in ("job.json", "result.json", "stderr.txt"))
        job_path.write_text(json.dumps(job), encoding="utf-8")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(err_path, "w+", encoding="utf-8") as err:
            proc = subprocess.Popen([*_child_command(), str(job_path), str(result_path)], stdout=subprocess.PIPE,
                                    stderr=err, stdin=subprocess.DEVNULL, text=True, env=env)
            try:
                for line in proc.stdout:
                    event = parse_progress(line)
                    if event is not None:
                        progress.update(task, event)
                rc = proc.wait()
            except BaseException:  # Ctrl-C (or anything else): stop the child, then let it propagate
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
            if result_path.exists():
                return json.loads(result_path.read_text(encoding="utf-8"))
            err.seek(0)
            tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-1:]
        why = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
        if rc == -9:
            why += " (the kernel's out-of-memory killer?)"
        msg = f"worker process died ({why})" + (f": {tail[0].strip()}" if tail else "")
        return {"run": to_plain(RunResult(job["optimizer"], None, status="error", error=msg)), "model": None,
                "device": None, "samples_csv": None, "snapshot": None}


def _model_info(model_spec, spec: ProfileSpec) -> ModelInfo:
    """Model record from a meta build (used when no child got as far as building the model)."""
    from sgdsai_cli.models import build_model, count_params
    from sgdsai_cli.precision import resolve_precision

    precision = resolve_precision(spec.precision)
    model = build_model(model_spec, device="meta", dtype=precision.param_dtype)
    params = list(model.parameters())
    pb = sum(p.numel() * p.element_size() for p in params)
    return ModelInfo(model_spec.name, model_spec.family, count_params(model), len(params), pb, pb)


def _device_fallback(spec: ProfileSpec) -> dict[str, Any]:
    if spec.device == "cpu":
        from sgdsai_cli.measure.worker import cpu_device_record

        return cpu_device_record()
    return {"type": "cuda", "name": None, "total_memory_bytes": None, "uuid": None, "driver": None}


# ----------------------------------------------------------------------------------------------
# the entry point


def profile_real(spec: ProfileSpec, model_spec, optimizers: list[str], *, sample_interval_ms: float = 10.0,
                 out_dir: Path | None = None, snapshot: bool = False, quiet: bool = False,
                 samples_dir: Path | None = None, sampler: bool = True, estimate: bool = True) -> dict:
    """Train ``model_spec`` for real with each optimizer in turn; return the profile document.

    ``spec.device`` is ``cpu``, ``cuda`` or ``cuda:N``. Samples CSVs go to ``samples_dir`` (default
    ``out_dir``; nowhere when both are None), snapshots and figures to ``out_dir``.
    ``sampler=False`` turns the sampler thread off (NVML peaks then stay null); ``estimate=False``
    skips the estimate comparison. Raises EnvironmentUnavailable before starting when the device
    cannot do it; after that, failures are run results.
    """
    from sgdsai_cli.measure.worker import model_spec_to_dict
    from sgdsai_cli.optim.registry import resolve_optimizer

    for name in optimizers:
        resolve_optimizer(name)
    if not optimizers:
        raise BadInput("no optimizer to run")
    check_device(spec, model_spec, optimizers)
    if not sample_interval_ms > 0:
        raise BadInput(f"bad sample interval {sample_interval_ms!r} ms (must be greater than zero)")
    out_dir = Path(out_dir) if out_dir is not None else None
    samples_dir = Path(samples_dir) if samples_dir is not None else out_dir
    for d in {out_dir, samples_dir} - {None}:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"cannot create output folder '{d}': {e.strerror or e}") from None

    runs: list[dict] = []
    model_info = device = None
    samples_paths: dict[str, Path] = {}
    interrupted = False
    with _Progress(quiet) as progress:
        for i, name in enumerate(optimizers):
            stem = safe_name(name)
            job = {
                "spec": to_plain(spec),
                "model": model_spec_to_dict(model_spec),
                "optimizer": name,
                "sample_interval_ms": sample_interval_ms,
                "sampler": sampler,
                "samples_csv": str((samples_dir / f"samples-{stem}.csv").resolve()) if samples_dir else None,
                "snapshot_path": str((out_dir / f"snapshot-{stem}.pickle").resolve()) if snapshot and out_dir
                else None,
                "progress": not quiet,
            }
            task = progress.task(f"{name}")
            try:
                result = run_child(job, progress, task)
            except KeyboardInterrupt:
                interrupted = True
                for rest in optimizers[i:]:
                    runs.append(to_plain(RunResult(rest, None, status="skipped",
                                                   error="interrupted (Ctrl-C) before this run finished")))
                progress.finish(task, "interrupted")
                break
            run = result["run"]
            progress.finish(task, run["status"])
            if snapshot and not out_dir and spec.device.startswith("cuda"):
                run["note"] = "; ".join(filter(None, [run.get("note"), "--snapshot needs --out DIR: not written"]))
            if result.get("snapshot"):
                run.setdefault("memory", {}).setdefault("details", {})["snapshot"] = result["snapshot"]
            if result.get("samples_csv"):
                samples_paths[name] = Path(result["samples_csv"])
            model_info = model_info or result.get("model")
            device = device or result.get("device")
            runs.append(run)

    est_note = None
    if estimate and not interrupted:
        as_run = {run["optimizer"]: estimate_name(run["optimizer"], run.get("impl")) for run in runs}
        try:
            estimates, est_note = _estimates(spec, model_spec, list(dict.fromkeys(as_run.values())))
        except KeyboardInterrupt:  # Ctrl-C during the estimate: keep the measured runs
            estimates, est_note, interrupted = {}, "estimate interrupted (Ctrl-C)", True
        for run in runs:
            est = estimates.get(as_run[run["optimizer"]])
            if est is not None and as_run[run["optimizer"]] != run["optimizer"]:
                est = {**est, "optimizer": as_run[run["optimizer"]]}
            attach_estimate(run, est)
    if est_note:
        for run in runs:
            run["note"] = "; ".join(filter(None, [run.get("note"), est_note]))

    info = ModelInfo(**model_info) if model_info else _model_info(model_spec, spec)
    doc = profile_document(spec, info, [], device=device or _device_fallback(spec))
    doc["runs"] = runs
    if interrupted:
        doc["interrupted"] = True
    if out_dir is not None and not interrupted:
        try:
            write_plots(doc, out_dir, samples_paths)
        except KeyboardInterrupt:
            doc["interrupted"] = True
    return doc


def write_plots(doc: dict, out_dir: Path, samples_paths: dict[str, Path]) -> list[Path]:
    """Figures for the document and its samples; a figure that fails becomes a note, not a crash."""
    from sgdsai_cli.measure.sampler import read_samples
    from sgdsai_cli.render.profile_figures import profile_plots

    frames = {}
    for name, path in samples_paths.items():
        try:
            frames[name] = read_samples(path)
        except Exception:
            continue
    try:
        return profile_plots(doc, out_dir, frames)
    except Exception as e:
        note = f"figures not written: {e.__class__.__name__}: {e}"
        for run in doc["runs"]:
            run["note"] = "; ".join(filter(None, [run.get("note"), note]))
        return []
