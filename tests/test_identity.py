"""Identity by content: fingerprints, display names, check matching by either, byte-identical baselines."""

from __future__ import annotations

import json
import re

import pytest

from sgdsai_cli.analysis.check import compare
from sgdsai_cli.analysis.model_match import match_models
from sgdsai_cli.analysis.profile import profile
from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure.identity import display_name, model_fingerprint, normalise_name
from sgdsai_cli.models import build_model, resolve_model
from sgdsai_cli.results import ProfileResult, stable_form

GPT2 = {"model_type": "gpt2", "vocab_size": 512, "n_positions": 128, "n_embd": 64, "n_layer": 2, "n_head": 4}


def _config(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my-model.json"
    path.write_text(json.dumps({**GPT2, **changes}))
    return path


def _fingerprint(name: str) -> str:
    spec = resolve_model(name)
    return model_fingerprint(spec, build_model(spec, device="meta"))


def test_fingerprint_is_short_hex_and_deterministic():
    first, second = _fingerprint("tiny-llama"), _fingerprint("tiny-llama")
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert first == second


@pytest.mark.parametrize("change, same", [
    ({}, True),
    ({"layer_norm_epsilon": 1e-6}, True),  # an epsilon changes no byte
    ({"n_layer": 3}, False),  # one more block
    ({"n_embd": 128}, False),  # wider
    ({"vocab_size": 1024}, False),
])
def test_fingerprint_follows_memory_relevant_content(tmp_path, change, same):
    base = _fingerprint(str(_config(tmp_path / "a")))
    other = _fingerprint(str(_config(tmp_path / "b", **change)))
    assert (base == other) is same


def test_fingerprint_follows_the_dtype():
    spec = resolve_model("tiny-gpt2")
    import torch

    fp32 = model_fingerprint(spec, build_model(spec, device="meta"))
    bf16 = model_fingerprint(spec, build_model(spec, device="meta", dtype=torch.bfloat16))
    assert fp32 != bf16


@pytest.mark.parametrize("given, shown", [
    ("./ci/x.json", "ci/x.json"), ("ci//x.json", "ci/x.json"), ("ci/./x.json", "ci/x.json"),
    ("ci/x.json", "ci/x.json"), ("llama2-7b", "llama2-7b"), ("pkg.mod:factory", "pkg.mod:factory"),
])
def test_display_names_do_not_depend_on_spelling(given, shown):
    assert normalise_name(given) == shown


def test_display_name_prefers_the_given_name():
    spec = resolve_model("tiny-gpt2")
    assert display_name(spec) == "tiny-gpt2"
    assert display_name(spec, "my run") == "my run"


def _meta(model, **options) -> ProfileResult:
    return profile(model=model, device="meta", seq_len=32, optimizers=("sgdsai",), **options)


def test_path_spelling_does_not_break_the_gate(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    _config(tmp_path / "ci")
    made = cli("profile", "--model", "ci/my-model.json", "--device", "meta", "--seq-len", "32", "-o", "sgdsai",
               "--baseline", "base.json", "--update-baseline", "--quiet")
    assert made.exit_code == 0, made.output
    gated = cli("profile", "--model", "./ci/my-model.json", "--device", "meta", "--seq-len", "32", "-o", "sgdsai",
                "--baseline", "base.json", "--quiet")
    assert gated.exit_code == 0, gated.output
    assert json.loads((tmp_path / "base.json").read_text())["model"]["name"] == "ci/my-model.json"


def test_same_fingerprint_matches_under_other_names(tmp_path):
    path = _config(tmp_path)
    base, cur = _meta(str(path), name="old name"), _meta(str(path), name="new name")
    match = match_models(cur, base)
    assert match.same and not match.fingerprint_changed
    assert "matched by fingerprint" in match.note
    report = compare(cur, base, tolerance=0.0)
    assert report.passed and report.matched_runs == 1


def test_changed_architecture_under_one_name_is_a_regression(tmp_path):
    base = _meta(str(_config(tmp_path / "a")), name="my-model")
    cur = _meta(str(_config(tmp_path / "b", n_layer=3)), name="my-model")
    report = compare(cur, base, tolerance=0.5)
    assert not report.passed
    row = next(r for r in report.rows if r.metric == "fingerprint")
    assert (row.kind, row.verdict) == ("model", "regression")
    assert (row.baseline, row.current) == (base.model.fingerprint, cur.model.fingerprint)
    assert "fingerprint of model" in report.summary()


def test_changed_architecture_through_the_cli_exits_1(tmp_path, cli):
    base = tmp_path / "base.json"
    _meta(str(_config(tmp_path / "a")), name="my-model").save(base)
    got = cli("profile", "--model", str(_config(tmp_path / "b", n_embd=128)), "--name", "my-model",
              "--device", "meta", "--seq-len", "32", "-o", "sgdsai", "--baseline", str(base), "--quiet")
    assert got.exit_code == 1, got.output
    assert "fingerprint" in got.output


def test_different_models_still_have_nothing_to_compare(tmp_path):
    base = _meta(str(_config(tmp_path / "a")), name="one")
    cur = _meta(str(_config(tmp_path / "b", n_layer=3)), name="two")
    with pytest.raises(BadInput, match="nothing to compare"):
        compare(cur, base, tolerance=0.0)


def test_an_older_baseline_without_fingerprint_matches_by_name(tiny_profile):
    old = json.loads(json.dumps(tiny_profile))
    del old["model"]["fingerprint"]
    report = compare(ProfileResult.from_dict(tiny_profile), ProfileResult.from_dict(old), tolerance=0.0)
    assert report.passed
    assert any("no model fingerprint" in n for n in report.notes)


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 201])
def test_bad_names_are_refused(name):
    with pytest.raises(BadInput, match="bad name") as info:
        _meta("tiny-gpt2", name=name)
    assert info.value.field == "name"


def test_bad_name_on_the_cli_names_the_flag(cli):
    got = cli("profile", "--model", "tiny-gpt2", "--device", "meta", "--name", " ")
    assert got.exit_code == 2
    assert "--name" in got.output


def test_regenerated_baselines_are_byte_identical(tmp_path, cli):
    args = ["profile", "--model", "tiny-llama", "--device", "meta", "--seq-len", "32", "--quiet"]
    for copy in ("one.json", "two.json"):
        got = cli(*args, "--baseline", str(tmp_path / copy), "--update-baseline")
        assert got.exit_code == 0, got.output
    one, two = (tmp_path / "one.json").read_bytes(), (tmp_path / "two.json").read_bytes()
    assert one == two
    doc = json.loads(one)
    assert "created_utc" not in doc and "timing_s" not in doc
    assert set(doc["environment"]) == {"torch", "device"}
    assert all("trace_seconds" not in r["memory"]["details"] for r in doc["runs"])
    assert all("seconds" not in r["memory"]["details"].get("allocator", {}) for r in doc["runs"])
    check = cli("check", str(tmp_path / "one.json"), "--baseline", str(tmp_path / "two.json"), "--tolerance", "0%")
    assert check.exit_code == 0, check.output


def test_stable_form_keeps_the_full_document_apart(tiny_profile):
    stable = stable_form(tiny_profile)
    assert "created_utc" in tiny_profile and "timing_s" in tiny_profile  # the input is not changed
    assert {k for k in tiny_profile if k not in stable} == {"created_utc", "timing_s"}
    assert stable["runs"][0]["memory"]["state_bytes"] == tiny_profile["runs"][0]["memory"]["state_bytes"]
