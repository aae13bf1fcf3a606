"""Running one job in a fresh child process, its progress lines turned into callbacks.

``run_child`` writes the job to a temp folder, starts ``python -m sgdsai_cli.measure.worker``,
reads its stdout line by line (progress events go to ``on_event``; other output is ignored) and
returns the child's ``JobResult``. A child that dies without a result becomes an error row that
says how it died (exit status, signal; SIGKILL suggests the kernel's out-of-memory killer) and
the last line it wrote on stderr. Ctrl-C (or any exception) in the parent stops the child first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sgdsai_cli.measure.job import Job, JobResult, parse_progress
from sgdsai_cli.results import RunResult


def child_command() -> list[str]:
    """The command that runs a job: ``[python, -m, sgdsai_cli.measure.worker]`` (+ JOB RESULT)."""
    return [sys.executable, "-m", "sgdsai_cli.measure.worker"]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _died(job: Job, rc: int, err_tail: list[str]) -> JobResult:
    why = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
    if rc == -9:
        why += " (the kernel's out-of-memory killer?)"
    msg = f"worker process died ({why})" + (f": {err_tail[0].strip()}" if err_tail else "")
    return JobResult(run=RunResult(job.optimizer, None, status="error", error=msg))


def run_child(job: Job, on_event: Callable[[dict], None]) -> JobResult:
    """Run ``job`` in a fresh process (``child_command()``); the child's JobResult."""
    with tempfile.TemporaryDirectory(prefix="sgdsai-run-") as tmp:
        job_path, result_path, err_path = (Path(tmp) / n for n in ("job.json", "result.json", "stderr.txt"))
        job_path.write_text(json.dumps(job.to_dict()), encoding="utf-8")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(err_path, "w+", encoding="utf-8") as err:
            proc = subprocess.Popen([*child_command(), str(job_path), str(result_path)],
                                    stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, env=env)
            try:
                for line in proc.stdout:
                    event = parse_progress(line)
                    if event is not None:
                        on_event(event)
                rc = proc.wait()
            except BaseException:  # Ctrl-C (or anything else): stop the child, then let it propagate
                _stop(proc)
                raise
            finally:
                if proc.stdout is not None:
                    proc.stdout.close()
            if result_path.exists():
                return JobResult.from_dict(json.loads(result_path.read_text(encoding="utf-8")))
            err.seek(0)
            tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-1:]
    return _died(job, rc, tail)
