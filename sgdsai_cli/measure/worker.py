"""Child process of a real run: one optimizer, one fresh process, one clean allocator.

    python -m sgdsai_cli.measure.worker JOB.json RESULT.json

``JOB.json`` is a ``job.Job`` (written by ``realrun``), ``RESULT.json`` receives a
``job.JobResult``; with ``job.progress`` the child writes progress lines on stdout (the
protocol of ``job``). The run itself is ``training.TrainingRun``; its summary
``memory_summary``.

Failures are results: running out of memory (``devices.is_oom``) is status "oom" with the phase,
the step and the peak before it; any other exception status "error" with its first line and the
last lines of its traceback in the note. The child runs in its own process group; it ignores
SIGINT (the parent decides), dies on SIGTERM, and exits when its stdin (a pipe from the parent)
reaches end-of-file, removing the parent's ``sgdsai-run-*`` folder: it never outlives a parent that
was killed (SIGKILL) before it could clean up. A CPU run that finished carries ``timing`` (threads,
step p90/p50) and, when its step times vary widely, a note saying how to get a stable figure.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from sgdsai_cli.measure.devices import device_record, is_oom
from sgdsai_cli.measure.job import Job, JobResult, progress_line
from sgdsai_cli.measure.memory_summary import latency, memory_result, timing
from sgdsai_cli.measure.training import ProgressEvent, TrainingRun
from sgdsai_cli.results import RunResult


def first_line(e: BaseException) -> str:
    """'ClassName: first line of the message'."""
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0] if text else ''}".rstrip(": ")


def _train(run: TrainingRun) -> tuple[str, str | None, int | None]:
    """Set up and train; (status, error, peak before an out-of-memory)."""
    try:
        run.setup()
        run.train()
        return "ok", None, None
    except Exception as e:  # a run that fails is a result
        if not is_oom(e):
            run.notes.append("traceback: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:]))
            return "error", first_line(e), None
        try:
            peak = run.recorder.peak_so_far() if run.recorder is not None else None
        except Exception:
            peak = None
        return "oom", f"out of memory in {run.phase} (step {run.step}): {first_line(e)}", peak
    finally:
        run.stop()


def _samples_csv(run: TrainingRun) -> str | None:
    if run.sampler is None or not run.job.samples_csv:
        return None
    try:
        return str(run.sampler.write_csv(run.job.samples_csv))
    except Exception as e:
        run.notes.append(f"samples CSV not written: {first_line(e)}")
        return None


def _device(run: TrainingRun) -> dict[str, Any] | None:
    try:
        return device_record(run.device, driver=run.nvml.driver if run.nvml else None)
    except Exception:
        return None


def run_job(job: Job, on_event: ProgressEvent | None = None) -> JobResult:
    """Run one optimizer's job in this process; never raises for a failed run (see the module docstring)."""
    from sgdsai_cli.measure.sizing import model_info

    run = TrainingRun(job, on_event)
    status, error, peak = _train(run)
    samples_csv = _samples_csv(run)
    memory = memory_result(run, status, peak)
    if status == "oom":
        memory.details["oom_phase"] = run.phase
        memory.details["oom_step"] = run.step
    timed, spread_note = timing(run) if status == "ok" else (None, None)
    if spread_note:
        run.notes.append(spread_note)
    result = RunResult(
        optimizer=job.optimizer,
        impl=getattr(run.optimizer, "impl_used", None) or run.impl,
        status=status,
        memory=memory,
        latency_ms=latency(run) if status == "ok" else None,
        error=error,
        note="; ".join(dict.fromkeys(run.notes)) or None,
        extra={"timing": timed} if timed is not None else {},
    )
    snapshot = job.snapshot_path if status == "ok" and run.is_cuda else None
    return JobResult(run=result, model=model_info(run.model, job.model_spec) if run.model is not None else None,
                     device=_device(run), samples_csv=samples_csv,
                     snapshot=snapshot if snapshot and Path(snapshot).exists() else None)


def _emit(event: str, **fields) -> None:
    sys.stdout.write(progress_line(event, **fields))
    sys.stdout.flush()


def _exit_with_parent(job_path: str) -> None:
    """Exit at once when stdin (a pipe the parent holds open) reaches end-of-file: the parent is gone.

    The parent died without cleaning up (SIGKILL), so its temp folder (the job's, ``sgdsai-run-*``)
    is removed here. Run by hand (stdin a terminal, a file, /dev/null), there is no parent to watch.
    """
    import os
    import shutil
    import stat
    import threading

    try:
        if sys.stdin is None or not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
            return
    except (OSError, ValueError):
        return

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        folder = Path(job_path).resolve().parent
        if folder.name.startswith("sgdsai-run-"):
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(143)

    threading.Thread(target=watch, name="sgdsai-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child: read the job, run it, write the result atomically."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m sgdsai_cli.measure.worker JOB.json RESULT.json\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent stops this process group with SIGTERM
    _exit_with_parent(argv[0])
    from sgdsai_cli.files import write_json_atomic

    job = Job.from_dict(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    result = run_job(job, _emit if job.progress else None)
    write_json_atomic(argv[1], result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
