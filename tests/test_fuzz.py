"""Property-based tests of every input parser: a value comes back, or a one-line error of ours, nothing else.

Parsers of user text (sizes, percentages, budgets, step lists, checkpointing policies, int options),
user files (config.json, TOML run specs, result JSON) and the CLI driven in-process on generated
argv. The property: the call returns, or raises one of ``sgdsai_cli.errors`` with a single-line
message; never another exception type, never a traceback.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdsai_cli.analysis.check import parse_budget, parse_budgets
from sgdsai_cli.analysis.gsnr import parse_steps
from sgdsai_cli.analysis.specfile import load_spec_file
from sgdsai_cli.cli.options import parse_int, parse_positive
from sgdsai_cli.errors import SgdsaiError
from sgdsai_cli.models.checkpointing import parse_policy
from sgdsai_cli.models.hf_config import load_config_spec
from sgdsai_cli.schema import load_result
from sgdsai_cli.units import parse_percent, parse_size

# derandomized: the same examples every run, so CI is repeatable; untimed: no wall-clock asserts
_REPEATABLE = dict(deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
FAST = settings(max_examples=60, **_REPEATABLE)

# text that looks like what users type: numbers, units, separators, and anything else
UNITS = st.sampled_from(["", "B", "KB", "KiB", "MB", "MiB", "GB", "GiB", "TB", "TiB", "%", "e400", "x", " "])
NUMBERS = st.one_of(st.integers(min_value=-10**30, max_value=10**30).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.just("1" * 5000))
TEXT = st.one_of(st.text(max_size=40), st.builds(lambda n, u: n + u, NUMBERS, UNITS))


def _ours(call, *args):
    """Call; an error must be ours and one line."""
    try:
        return call(*args)
    except SgdsaiError as e:
        assert "\n" not in str(e) and str(e)
        return None


@FAST
@given(TEXT)
def test_sizes(text):
    value = _ours(parse_size, text)
    assert value is None or (isinstance(value, int) and value > 0)


@FAST
@given(TEXT)
def test_percentages(text):
    value = _ours(parse_percent, text)
    assert value is None or (math.isfinite(value) and value >= 0)


@FAST
@given(st.one_of(TEXT, st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["state", "peak", "x", ""]), TEXT)))
def test_budgets(text):
    _ours(parse_budget, text)
    _ours(parse_budgets, [text, text])  # a repeated key is refused, never silently dropped


@FAST
@given(st.one_of(TEXT, st.lists(st.integers(min_value=-5, max_value=10**7), max_size=8).map(
    lambda xs: ",".join(map(str, xs)))))
def test_step_lists(text):
    steps = _ours(parse_steps, text)
    assert steps is None or all(isinstance(s, int) and s >= 0 for s in steps)


@FAST
@given(TEXT)
def test_checkpointing_policies(text):
    _ours(parse_policy, text)


@FAST
@given(TEXT)
def test_int_and_positive_options(text):
    _ours(parse_int, "--steps", text)
    _ours(parse_positive, "--sample-interval-ms", text)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20), st.floats(),
              st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=20)
CONFIG_KEYS = ["model_type", "vocab_size", "n_embd", "n_layer", "n_head", "n_positions", "hidden_size",
               "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_key_value_heads",
               "architectures", "image_size", "patch_size", "head_dim"]


@settings(max_examples=40, **_REPEATABLE)
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), st.one_of(
    JSON_VALUES, st.integers(min_value=-3, max_value=64), st.sampled_from(["gpt2", "llama", "vit", "mistral", "x"]))))
def test_config_json(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    _ours(load_config_spec, str(path))


@FAST
@given(st.one_of(st.text(max_size=200), st.dictionaries(
    st.sampled_from(["model", "precision", "batch_size", "seq_len", "steps", "warmup", "optimizers", "device",
                     "tolerance", "baseline", "x"]),
    st.one_of(st.integers(min_value=-10**20, max_value=10**20), st.text(max_size=10), st.booleans(),
              st.lists(st.text(max_size=5), max_size=3))).map(
    lambda d: "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items()))))
def test_toml_specs(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    _ours(load_spec_file, path)


@FAST
@given(st.one_of(JSON_VALUES, st.fixed_dictionaries(
    {"schema_version": st.sampled_from([1, True, 1.0, "1", 2]), "kind": st.sampled_from(["profile", "plan", "x"])},
    optional={"spec": JSON_VALUES, "model": JSON_VALUES, "runs": JSON_VALUES, "environment": JSON_VALUES})))
def test_result_json(tmp_path, doc):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc))
    _ours(load_result, path)


ARGV = st.lists(st.one_of(st.sampled_from(["--steps", "--batch-size", "--tolerance", "--budget", "--precision",
                                           "--optimizer", "--seq-len", "--format", "--quiet", "--name"]),
                          TEXT), max_size=5)


@settings(max_examples=40, **_REPEATABLE)
@given(st.sampled_from([["presets"], ["check", "missing.json"], ["profile", "--model", "tiny-gpt2", "--device",
                                                                  "meta", "--seq-len", "16"]]), ARGV)
def test_cli_argv(cli, command, extra):
    got = cli(*command, *extra)
    assert got.exit_code in (0, 1, 2, 3), (command, extra, got.output)
    assert "Traceback" not in got.output
    assert got.exception is None or isinstance(got.exception, SystemExit), repr(got.exception)


@pytest.mark.parametrize("text", ["1e400GB", "1e400", "inf", "-0", "nan%"])
def test_known_edge_values(text):
    _ours(parse_size, text)
    _ours(parse_percent, text)
