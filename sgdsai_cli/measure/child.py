"""Running one job in a fresh child process, its progress lines turned into callbacks.

``run_child`` writes the job to a temp folder, starts ``python -m sgdsai_cli.measure.worker``,
reads its stdout line by line (progress events go to ``on_event``; other output is ignored) and
returns the child's ``JobResult``. A child that dies without a result becomes an error row that
says how it died (exit status, signal; SIGKILL suggests the kernel's out-of-memory killer) and
the last line it wrote on stderr. Ctrl-C (or any exception) in the parent stops the child first.

No orphan, no temp folder left. The child runs in its own session (its own process group), so a
Ctrl-C at the terminal reaches only the parent, which decides: on any exception (a
``KeyboardInterrupt`` from Ctrl-C, or from the command line's SIGTERM handler) it stops the whole
group (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``), reaps the child and removes the temp folder
``sgdsai-run-*``. Starting the child and removing the folder run to completion even when a Ctrl-C
comes in the middle (in a helper thread; the interrupt is raised after), so a child is never
started untracked and a folder never half-removed. The child's stdin is a pipe the parent never
writes: when the parent dies without cleaning up (SIGKILL), the child reads end-of-file and exits,
removing that folder itself (``worker``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sgdsai_cli.measure.job import Job, JobResult, parse_progress
from sgdsai_cli.results import RunResult

STOP_TIMEOUT_S = 5.0  # after SIGTERM, the child's group gets SIGKILL
TEMP_PREFIX = "sgdsai-run-"


def child_command() -> list[str]:
    """The command that runs a job: ``[python, -m, sgdsai_cli.measure.worker]`` (+ JOB RESULT)."""
    return [sys.executable, "-m", "sgdsai_cli.measure.worker"]


def to_completion(fn: Callable, *args, **kwargs):
    """``(fn(*args, **kwargs), interrupt)``: ``fn`` runs in a helper thread, so a KeyboardInterrupt
    (raised in the main thread only) cannot cut it short; one that came meanwhile is returned, for the
    caller to raise once it has what ``fn`` made. An exception of ``fn`` is raised."""
    box: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller below
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=target, name="sgdsai-uninterrupted", daemon=True).start()
    interrupt = None
    while True:  # not Thread.join: an interrupted join can report a running thread as stopped (Python < 3.13)
        try:
            done.wait()
            break
        except KeyboardInterrupt as e:
            interrupt = interrupt or e
    if "error" in box:
        raise box["error"]
    return box["value"], interrupt


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)  # the child leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _stop(proc: subprocess.Popen) -> None:
    """Stop the child's process group and reap the child."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    _signal_group(proc, signal.SIGKILL)  # anything the child started that outlived it


def _died(job: Job, rc: int, err_tail: list[str]) -> JobResult:
    why = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
    if rc == -9:
        why += " (the kernel's out-of-memory killer?)"
    msg = f"worker process died ({why})" + (f": {err_tail[0].strip()}" if err_tail else "")
    return JobResult(run=RunResult(job.optimizer, None, status="error", error=msg))


def _start(cmd: list[str], err) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc, interrupt = to_completion(subprocess.Popen, cmd, stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.PIPE, text=True, env=env, start_new_session=True)
    if interrupt is not None:
        to_completion(_stop, proc)
        _close(proc)
        raise interrupt
    return proc


def _close(proc: subprocess.Popen) -> None:
    for pipe in (proc.stdout, proc.stdin):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


_LIVE_TEMPS: set[str] = set()  # temp folders made and not yet removed (remove_leftovers' list)
REMOVE_TRIES = 20  # a folder still there after rmtree (a dying process wrote into it): tried again, 50 ms apart


def _make_temp() -> str:
    """A new ``sgdsai-run-*`` folder, listed in ``_LIVE_TEMPS`` in the same uninterruptible call."""
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    _LIVE_TEMPS.add(folder)
    return folder


def _remove_now(folder: str) -> None:
    for _ in range(REMOVE_TRIES):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.exists(folder):
            break
        time.sleep(0.05)
    _LIVE_TEMPS.discard(folder)


def _remove(folder: str) -> KeyboardInterrupt | None:
    """Remove the temp folder to the end; a Ctrl-C that came meanwhile is returned."""
    return to_completion(_remove_now, folder)[1]


def remove_leftovers() -> None:
    """Remove every temp folder this process made and has not removed (the command line calls it at exit,
    whatever stopped the work, so no ``sgdsai-run-*`` folder outlives the process)."""
    for folder in list(_LIVE_TEMPS):
        _remove_now(folder)


def run_child(job: Job, on_event: Callable[[dict], None]) -> JobResult:
    """Run ``job`` in a fresh process (``child_command()``); the child's JobResult.

    A KeyboardInterrupt raised after the child had written its result carries that result as
    ``job_result`` (the run finished: the caller keeps it).
    """
    tmp, interrupt = to_completion(_make_temp)
    try:
        if interrupt is not None:
            raise interrupt
        result = _run_in(Path(tmp), job, on_event)
    except BaseException:
        _remove(tmp)
        raise
    interrupt = _remove(tmp)
    if interrupt is not None:
        interrupt.job_result = result
        raise interrupt
    return result


def _read_result(path: Path) -> JobResult | None:
    """The child's result (written atomically: whole or absent), or None."""
    try:
        return JobResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


def _run_in(tmp: Path, job: Job, on_event: Callable[[dict], None]) -> JobResult:
    job_path, result_path, err_path = (tmp / n for n in ("job.json", "result.json", "stderr.txt"))
    job_path.write_text(json.dumps(job.to_dict()), encoding="utf-8")
    with open(err_path, "w+", encoding="utf-8") as err:
        proc = _start([*child_command(), str(job_path), str(result_path)], err)
        try:
            for line in proc.stdout:
                event = parse_progress(line)
                if event is not None:
                    on_event(event)
            rc = proc.wait()
            result = _read_result(result_path)
        except BaseException as e:  # Ctrl-C, SIGTERM (or anything else): stop the child's group, then let it propagate
            to_completion(_stop, proc)  # a second Ctrl-C cannot cut this short
            if isinstance(e, KeyboardInterrupt):
                e.job_result = to_completion(_read_result, result_path)[0]  # it finished just before: keep it
            raise
        finally:
            _close(proc)
        if result is not None:
            return result
        err.seek(0)
        tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-1:]
    return _died(job, rc, tail)
