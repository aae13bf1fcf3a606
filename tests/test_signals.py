"""The signal policy with real processes: ``python -m sgdsai_cli profile --device cpu`` and its workers.

SIGINT (as the terminal sends it, to the foreground process group) and SIGTERM (to the parent),
early (while the command line and torch are imported), during the first optimizer's run, during
the second, repeated a few milliseconds apart; SIGKILL of a worker and of the parent. Each case
asserts the exit code, the JSON document (every finished run kept), no traceback, no worker
process left and no ``sgdsai-run-*`` folder left. Moments are found by watching ``/proc`` for the
worker children, not by timing; every case has a hard timeout and kills what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

TIMEOUT_S = 90  # a case that takes longer than this has hung: it fails, and everything it started is killed
STEPS = "40"  # a worker lives for seconds (torch's import, then training): a signal lands while it runs
ROOT = Path(__file__).resolve().parents[1]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def _workers(parent: int) -> list[int]:
    """Live worker children of ``parent`` (``python -m sgdsai_cli.measure.worker``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None or st[0] != parent or st[1] in ("Z", "X"):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"sgdsai_cli.measure.worker" in cmdline:
            found.append(int(entry.name))
    return found


class Run:
    """One ``sgdsai profile`` process in its own session, its temp dir, what it printed."""

    def __init__(self, tmp_path: Path, optimizers=("sgdsai", "adamw"), steps: str = STEPS):
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.json = tmp_path / "out.json"
        self.seen: list[int] = []
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "sgdsai_cli", "profile", "--model", "tiny-gpt2", "--device", "cpu",
               "--seq-len", "32", "--steps", steps, "--json", str(self.json), "-q",
               *[part for o in optimizers for part in ("-o", o)]]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=tmp_path, start_new_session=True)
        self.start = time.monotonic()

    def wait_for_worker(self, index: int) -> int:
        """Block until the ``index``-th worker (0 first) is running; its pid."""
        while time.monotonic() - self.start < TIMEOUT_S:
            for pid in _workers(self.proc.pid):
                if pid not in self.seen:
                    self.seen.append(pid)
            if len(self.seen) > index:
                return self.seen[index]
            if self.proc.poll() is not None:
                pytest.fail(f"the command ended before worker {index} started: {self.finish()}")
            time.sleep(0.01)
        pytest.fail("no worker started")

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """As the terminal does for Ctrl-C: to the foreground group (the parent; workers have their own)."""
        os.killpg(self.proc.pid, signum)

    def finish(self) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail("the command hung")
        return self.proc.returncode, err

    def kill_all(self) -> None:
        for pid in [self.proc.pid, *self.seen]:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.proc.communicate()

    def doc(self) -> dict | None:
        return json.loads(self.json.read_text()) if self.json.exists() else None

    def assert_clean(self, err: str) -> None:
        for bad in ("Traceback", "Aborted", "Exception ignored", "KeyboardInterrupt"):
            assert bad not in err, err
        for pid in self.seen:  # no orphan: the parent reaped (or the worker left by itself)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid), f"worker {pid} outlived the command"
        assert [p.name for p in self.tmp.iterdir() if p.name.startswith("sgdsai-run-")] == []


@pytest.fixture
def run(tmp_path):
    started: list[Run] = []

    def start(**kw) -> Run:
        r = Run(tmp_path, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.kill_all()


def _statuses(doc: dict) -> list[tuple[str, str]]:
    return [(r["optimizer"], r["status"]) for r in doc["runs"]]


@pytest.mark.parametrize("signum, delay_s, code", [
    (signal.SIGINT, 0.15, 130),  # Python is importing the command line
    (signal.SIGINT, 0.8, 130),  # ... typer, rich, or torch
    (signal.SIGTERM, 0.8, 143),
])
def test_an_early_signal_stops_at_once(run, signum, delay_s, code):
    r = run()
    time.sleep(delay_s)
    if r.proc.poll() is None:
        r.interrupt(signum)
    rc, err = r.finish()
    assert rc == code, err
    r.assert_clean(err)
    doc = r.doc()  # nothing had finished: no document, or one with every run skipped
    assert doc is None or all(s == "skipped" for _, s in _statuses(doc))


@pytest.mark.parametrize("signum, worker, repeats, code, statuses", [
    # during the first optimizer: nothing finished, both skipped (the document says so)
    (signal.SIGINT, 0, 1, 130, [("sgdsai", "skipped"), ("adamw", "skipped")]),
    # during the second: the first run is kept
    (signal.SIGINT, 1, 1, 130, [("sgdsai", "ok"), ("adamw", "skipped")]),
    # an impatient user: five Ctrl-C a few ms apart during the second run
    (signal.SIGINT, 1, 5, 130, [("sgdsai", "ok"), ("adamw", "skipped")]),
    (signal.SIGTERM, 1, 1, 143, [("sgdsai", "ok"), ("adamw", "skipped")]),
    (signal.SIGTERM, 0, 3, 143, [("sgdsai", "skipped"), ("adamw", "skipped")]),
])
def test_a_signal_during_a_run_keeps_the_finished_runs(run, signum, worker, repeats, code, statuses):
    r = run()
    r.wait_for_worker(worker)
    time.sleep(0.3)  # the worker is importing torch or training: either way it is stopped
    for _ in range(repeats):
        r.interrupt(signum)
        time.sleep(0.005)
    rc, err = r.finish()
    assert rc == code, err
    r.assert_clean(err)
    doc = r.doc()
    assert doc is not None, err
    assert doc["interrupted"] is True
    assert _statuses(doc) == statuses
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    skipped = [x for x in doc["runs"] if x["status"] == "skipped"]
    assert all(f"interrupted ({name})" in x["error"] for x in skipped)
    kept = [x for x in doc["runs"] if x["status"] == "ok"]
    assert all(x["memory"]["state_bytes"] > 0 for x in kept)


def test_a_signal_after_the_last_run_keeps_every_run(run):
    """After the last worker ended (the estimate, writing, printing): both runs are written."""
    r = run(steps="3")
    last = r.wait_for_worker(1)
    while _alive(last) and time.monotonic() - r.start < TIMEOUT_S:
        time.sleep(0.005)
    for _ in range(3):
        if r.proc.poll() is None:
            r.interrupt(signal.SIGINT)
        time.sleep(0.003)
    rc, err = r.finish()
    assert rc in (0, 130), err  # 0 when the command had already ended
    r.assert_clean(err)
    assert _statuses(r.doc()) == [("sgdsai", "ok"), ("adamw", "ok")]


def test_a_killed_worker_is_an_error_row_and_the_next_run_goes_on(run):
    r = run(steps="3")
    os.kill(r.wait_for_worker(0), signal.SIGKILL)
    r.wait_for_worker(1)
    rc, err = r.finish()
    assert rc == 0, err
    r.assert_clean(err)
    doc = r.doc()
    assert _statuses(doc) == [("sgdsai", "error"), ("adamw", "ok")]
    assert "killed by signal 9" in doc["runs"][0]["error"]


def test_a_killed_parent_leaves_no_worker_and_no_temp_folder(run):
    r = run(optimizers=("sgdsai",), steps="100000")
    worker = r.wait_for_worker(0)
    time.sleep(0.3)
    os.kill(r.proc.pid, signal.SIGKILL)  # no handler runs: the worker must notice on its own
    rc, err = r.finish()
    assert rc == -signal.SIGKILL
    r.assert_clean(err)
    assert not _alive(worker)


# ----------------------------------------------------------------------------------------------
# in process: the pieces of the policy


@pytest.fixture
def handlers():
    """Signal handlers as they were before the test (the policy ignores SIGINT/SIGTERM on leaving)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_a_signal_inside_an_import_is_raised_when_the_import_is_over(tmp_path, monkeypatch, handlers):
    from sgdsai_cli.cli import signals

    (tmp_path / "slow_module_h14.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.2)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with signals.policy():
        with pytest.raises(KeyboardInterrupt, match="Ctrl-C"):
            import slow_module_h14  # noqa: F401
            while True:  # the deferred interrupt comes within DEFER_S
                time.sleep(0.01)
        assert signals.received() == signal.SIGINT and signals.exit_code() == 130
    assert sys.modules["slow_module_h14"].DONE is True  # the import ran to its end
    assert signals.received() is None  # outside the policy (in-process callers): nothing


@pytest.mark.parametrize("signums, code, name", [
    ([signal.SIGINT], 130, "Ctrl-C"),
    ([signal.SIGTERM], 143, "SIGTERM"),
    ([signal.SIGTERM, signal.SIGINT, signal.SIGINT], 143, "SIGTERM"),  # the first one counts
])
def test_only_the_first_signal_raises(handlers, signums, code, name):
    from sgdsai_cli.cli import signals

    raised = 0
    with signals.policy():
        for s in signums:
            try:
                os.kill(os.getpid(), s)
                time.sleep(0.05)
            except KeyboardInterrupt:
                raised += 1
        assert (raised, signals.exit_code(), signals.name()) == (1, code, name)


def test_a_shielded_section_records_and_does_not_raise(handlers):
    from sgdsai_cli.cli import signals

    with signals.policy():
        with signals.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert signals.received() == signal.SIGTERM
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # leaving: nothing can interrupt the exit


@pytest.mark.parametrize("finished_at, statuses", [
    (None, [("sgdsai", "skipped"), ("adamw", "skipped")]),  # interrupted during the first run
    (0, [("sgdsai", "ok"), ("adamw", "skipped")]),  # the first child had written its result
    (1, [("sgdsai", "ok"), ("adamw", "ok")]),  # the second had: both kept
])
def test_an_interrupt_after_a_child_finished_keeps_its_run(monkeypatch, finished_at, statuses):
    from sgdsai_cli.measure import child, realrun
    from sgdsai_cli.measure.job import JobResult
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.results import MemoryResult, ProfileSpec, RunResult

    def fake_run_child(job, on_event):
        memory = MemoryResult("measured", state_bytes=1)
        result = JobResult(run=RunResult(job.optimizer, None, status="ok", memory=memory))
        index = ["sgdsai", "adamw"].index(job.optimizer)
        if finished_at is None or index == finished_at:
            e = KeyboardInterrupt()
            if index == finished_at:
                e.job_result = result
            raise e
        return result

    monkeypatch.setattr(child, "run_child", fake_run_child)
    spec = ProfileSpec(model="tiny-gpt2", precision="fp32", device="cpu", batch_size=1, seq_len=16, warmup=3, steps=2)
    real = realrun.run_real(spec, resolve_model("tiny-gpt2"), ["sgdsai", "adamw"], estimate=False)
    assert [(r.optimizer, r.status) for r in real.result.runs] == statuses
    assert real.result.interrupted is True
