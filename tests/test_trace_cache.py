"""The disk cache of fake-tensor traces (``measure.trace_cache``): read back to the byte, keyed on everything.

The suite runs with the cache off (conftest); each test here turns it on in a folder of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from torch import nn

from sgdsai_cli import cache, plan, profile
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure import trace_cache
from sgdsai_cli.results import stable_form


@pytest.fixture
def traces(tmp_path, monkeypatch):
    """The cache on, in ``tmp_path/cache``; the in-process caches emptied; counts of the traces really run."""
    monkeypatch.setenv("SGDSAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SGDSAI_TRACE_CACHE", raising=False)
    runs = {"forward_backward": 0, "step": 0}
    real_model, real_step = est._trace_model, est._traced_step

    def count_model(*a, **k):
        runs["forward_backward"] += 1
        return real_model(*a, **k)

    def count_step(*a, **k):
        runs["step"] += 1
        return real_step(*a, **k)

    monkeypatch.setattr(est, "_trace_model", count_model)
    monkeypatch.setattr(est, "_traced_step", count_step)

    def fresh_process() -> dict:
        """Forget what this process traced (as a new command would) and return the counts so far."""
        est.trace_forward_backward.cache_clear()
        est.trace_step.cache_clear()
        return dict(runs)

    fresh_process()
    yield fresh_process
    fresh_process()


def _records(tmp_path) -> list:
    folder = tmp_path / "cache" / "traces"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _kinds(tmp_path) -> list[str]:
    """The kind of each record: forward_backward, step, replay."""
    return sorted(json.loads(json.loads(p.read_text())["key"])[1] for p in _records(tmp_path))


def _doc(result) -> dict:
    return stable_form(result.to_dict())


def test_a_second_profile_reads_every_trace_and_gives_the_same_document(traces, tmp_path):
    first = profile(model="tiny-llama", seq_len=32, optimizers=["sgdsai", "adamw"])
    assert traces() == {"forward_backward": 1, "step": 2}
    assert _kinds(tmp_path) == ["forward_backward", "replay", "replay", "step", "step"]  # a replay per optimizer
    second = profile(model="tiny-llama", seq_len=32, optimizers=["sgdsai", "adamw"])
    assert traces() == {"forward_backward": 1, "step": 2}  # nothing traced again
    assert _doc(second) == _doc(first)


def test_a_plan_after_a_profile_reuses_its_step_traces_and_gives_the_same_rows(traces, tmp_path):
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai", "adamw"])
    steps_before = traces()["step"]
    cold = plan(model="tiny-gpt2", seq_len=32, gpus=["a100-80gb"])
    warm_counts = traces()
    again = plan(model="tiny-gpt2", seq_len=32, gpus=["a100-80gb"])
    assert traces() == warm_counts
    assert warm_counts["step"] >= steps_before
    assert again.to_dict()["rows"] == cold.to_dict()["rows"]


def test_allocator_replays_are_kept_too_and_give_the_same_prediction(traces, monkeypatch):
    from sgdsai_cli.measure import allocator_trace

    replays = []
    real = allocator_trace.replay
    monkeypatch.setattr(allocator_trace, "replay", lambda *a, **k: replays.append(1) or real(*a, **k))
    first = profile(model="tiny-llama", seq_len=32, optimizers=["sgdsai", "adamw"])
    assert len(replays) == 2
    traces()
    second = profile(model="tiny-llama", seq_len=32, optimizers=["sgdsai", "adamw"])
    assert len(replays) == 2
    def allocator(result) -> list:
        return [{k: v for k, v in r.memory.details["allocator"].items() if k != "seconds"} for r in result.runs]

    assert allocator(second) == allocator(first)


@pytest.mark.parametrize("change", [
    {"precision": "bf16"},
    {"seq_len": 16},
    {"batch_size": 2},
    {"optimizers": ["adamw-fused"]},
])
def test_other_inputs_are_other_records(traces, change):
    base = {"model": "tiny-gpt2", "seq_len": 32, "optimizers": ["sgdsai"]}
    profile(**base)
    before = traces()
    profile(**{**base, **change})
    after = traces()
    assert after["forward_backward"] + after["step"] > before["forward_backward"] + before["step"]


def test_other_code_is_another_key(traces, monkeypatch):
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    before = traces()
    monkeypatch.setattr(trace_cache, "code_identity", lambda: "an edited source file")
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert traces() == {"forward_backward": before["forward_backward"] + 1, "step": before["step"] + 1}


def test_the_code_identity_covers_the_package_sources_and_versions():
    key = trace_cache.key_text("step", ("x",))
    assert trace_cache.code_identity() in key
    assert len(trace_cache.code_identity()) == 64


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"key": "another", "value": {}}', b'{"key": null}', b"[1]"])
def test_a_damaged_record_is_traced_again_and_replaced(traces, tmp_path, damage):
    first = profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    for path in _records(tmp_path):
        path.write_bytes(damage)
    before = traces()
    second = profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert traces() == {"forward_backward": before["forward_backward"] + 1, "step": before["step"] + 1}
    assert _doc(second) == _doc(first)
    assert all(json.loads(p.read_text())["key"] for p in _records(tmp_path))  # replaced by good records


def test_a_fifo_in_place_of_a_record_is_a_miss_not_a_hang(traces, tmp_path, no_hang):
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    for path in _records(tmp_path):
        path.unlink()
        os.mkfifo(path)
    before = traces()
    result = profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert result.runs[0].status == "ok"
    assert traces()["step"] == before["step"] + 1


def test_a_link_in_place_of_a_record_is_never_written_through(traces, tmp_path):
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    victim = tmp_path / "users-file.txt"
    victim.write_text("keep me")
    for path in _records(tmp_path):
        path.unlink()
        path.symlink_to(victim)
    traces()
    assert profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"]).runs[0].status == "ok"
    assert victim.read_text() == "keep me"


def test_a_record_with_the_right_key_but_wrong_fields_is_a_miss(traces, tmp_path):
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    for path in _records(tmp_path):
        doc = json.loads(path.read_text())
        doc["value"]["no_such_field"] = 1
        path.write_text(json.dumps(doc))
    before = traces()
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert traces()["step"] == before["step"] + 1


def test_a_cache_folder_that_cannot_be_made_is_no_error(traces, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SGDSAI_CACHE_DIR", str(blocker / "cache"))  # its parent is a file: mkdir fails
    result = profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert result.runs[0].status == "ok" and result.runs[0].memory.estimated_peak_bytes > 0
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("folder", ["/dev/null", "x" * 300, "/proc/self"])
def test_a_cache_folder_that_cannot_hold_records_is_no_error(traces, monkeypatch, tmp_path, folder):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGDSAI_CACHE_DIR", folder)
    for _ in range(2):
        traces()
        assert profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"]).runs[0].status == "ok"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["off", "0", "no", "false", "OFF"])
def test_off_means_neither_read_nor_written(traces, tmp_path, monkeypatch, value):
    monkeypatch.setenv("SGDSAI_TRACE_CACHE", value)
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    traces()
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert _records(tmp_path) == []
    assert traces() == {"forward_backward": 2, "step": 2}


def tiny_factory_model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def test_a_users_factory_model_is_never_kept(traces, tmp_path):
    profile(model=tiny_factory_model, optimizers=["sgdsai"], batch_size=4)
    traces()
    profile(model=tiny_factory_model, optimizers=["sgdsai"], batch_size=4)
    assert _kinds(tmp_path) == ["replay"]  # keyed on its events, not on the model: kept
    assert traces()["step"] == 2


def test_the_least_recently_read_records_go_beyond_the_limit(traces, tmp_path, monkeypatch):
    monkeypatch.setattr(trace_cache, "MAX_ENTRIES", 2)
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai", "adamw"])  # five records made
    assert len(_records(tmp_path)) == 2


def test_the_records_folder_is_private(traces, tmp_path):
    profile(model="tiny-gpt2", seq_len=32, optimizers=["sgdsai"])
    assert (tmp_path / "cache" / "traces").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("env, expected", [
    ({"SGDSAI_CACHE_DIR": "/x/c", "XDG_CACHE_HOME": "/y", "HOME": "/"}, "/x/c"),
    ({"SGDSAI_CACHE_DIR": "", "XDG_CACHE_HOME": "/y", "HOME": "/"}, "/y/sgdsai"),
    ({"HOME": "/"}, "/.cache/sgdsai"),
    ({"HOME": "/nonexistent-home-for-sgdsai"}, None),
])
def test_the_cache_folder(monkeypatch, env, expected):
    for name in ("SGDSAI_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = cache.cache_root()
    assert (None if root is None else str(root)) == expected
    assert not os.path.exists("/nonexistent-home-for-sgdsai")


def test_a_warm_profile_never_imports_dynamo(tmp_path):
    """With every trace on disk, a profile needs torch but not ``torch._dynamo`` (1.3 s to import)."""
    script = textwrap.dedent("""
        import sys
        import sgdsai_cli as sg
        doc = sg.profile(model="tiny-llama", seq_len=32, optimizers=["sgdsai", "adamw"]).to_dict()
        print(sorted(r["memory"]["estimated_peak_bytes"] for r in doc["runs"]), "torch._dynamo" in sys.modules)
    """)
    env = {**os.environ, "SGDSAI_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("SGDSAI_TRACE_CACHE", None)
    cold, warm = (subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                 check=True).stdout.split("] ") for _ in range(2))
    assert cold[1].strip() == "True" and warm[1].strip() == "False"
    assert warm[0] == cold[0]
