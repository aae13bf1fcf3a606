"""Shared fixtures: the CLI run in-process, a real meta-device profile to check against, the oracle.

- ``cli(*args)`` runs ``sgdsai ARGS`` in this process (Typer's CliRunner) and returns the result;
  ``res.stdout`` and ``res.stderr`` are kept apart.
- ``tiny_profile`` is the schema-1 document of ``sgdsai profile --model tiny-gpt2 --seq-len 64`` on
  meta, made once per session through the library API (the same numbers the CLI prints).
- ``sgd_sai`` is the official package (the parity oracle); a test that asks for it is skipped
  (alone) where the package is not installed.
- ``in_process`` makes real runs take place in the test's process (the worker's job without its child).
- The disk cache of traces is off for the whole suite (``SGDSAI_TRACE_CACHE=off``, inherited by every
  process a test starts), so each test traces what it measures; ``tests/test_trace_cache.py`` turns it on.
- ``no_hang`` fails a test after 60 s instead of letting an opened FIFO hang the suite; ``opened``
  lists every path passed to ``os.open`` (to show that a special file was refused unopened).
"""

from __future__ import annotations

import copy
import os
import signal

import pytest
from typer.testing import CliRunner


def pytest_configure(config) -> None:
    os.environ["SGDSAI_TRACE_CACHE"] = "off"


@pytest.fixture
def cli():
    from sgdsai_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def _tiny_profile_doc() -> dict:
    from sgdsai_cli import profile

    return profile(model="tiny-gpt2", seq_len=64, device="meta").to_dict()


@pytest.fixture
def tiny_profile(_tiny_profile_doc) -> dict:
    """A fresh copy each time, so a test may change it."""
    return copy.deepcopy(_tiny_profile_doc)


@pytest.fixture
def sgd_sai():
    """The official package (the oracle); only a test that asks for it is skipped without it."""
    return pytest.importorskip("sgd_sai")


@pytest.fixture
def no_hang():
    """A FIFO opened for reading blocks for ever: fail the test instead of hanging the suite."""

    def hung(signum, frame):
        raise TimeoutError("hung: a FIFO or device was opened or read")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def opened(monkeypatch):
    """Every path passed to ``os.open`` during the test (the bounded reader opens through it)."""
    seen: list[str] = []
    real = os.open

    def spy(path, *args, **kwargs):
        seen.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return seen


@pytest.fixture
def in_process(monkeypatch):
    """Real runs in this process: the worker's job without its child process (the same numbers, no spawn)."""
    from sgdsai_cli.measure import child, worker

    monkeypatch.setattr(child, "run_child", lambda job, on_event: worker.run_job(job))
