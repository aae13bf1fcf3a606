"""Your own module: --model file.py:factory, module:factory or a callable; batch() and loss(); errors in it."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

from sgdsai_cli import models
from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure.job import model_spec_from_dict, model_spec_to_dict
from sgdsai_cli.precision import resolve_precision

MODEL_FILE = '''
import torch
from torch import nn
import torch.nn.functional as F


class TinyLM(nn.Module):
    def __init__(self, vocab=128, width=32, depth=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        x = self.emb(tokens)
        for b in self.blocks:
            x = x + torch.relu(b(x))
        return self.head(x)


def build():
    return TinyLM()
'''

COMPANIONS = '''

def batch(model, batch_size, seq_len, device):
    x = torch.zeros(batch_size, seq_len, dtype=torch.long, device=device)
    return {"tokens": x, "targets": x}


def loss(model, batch):
    logits = model(batch["tokens"])
    return F.cross_entropy(logits.float().flatten(0, 1), batch["targets"].flatten())
'''


def user_file(tmp_path, text: str, name: str = "my_model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def tiny_mlp():
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


def test_file_factory_with_defaults(tmp_path):
    spec = models.resolve_model(user_file(tmp_path, MODEL_FILE) + ":build")
    assert spec.family == "factory" and spec.config.target.endswith("my_model.py:build")
    model = models.build_model(spec, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert models.count_params(model) == 128 * 32 + 3 * (32 * 32 + 32) + 32 * 128 + 128
    tokens, targets = models.make_batch(spec, 2, 8, "meta", model=model)
    assert tuple(tokens.shape) == (2, 8) and tokens.dtype == torch.long
    e = est.estimate_step(spec, resolve_precision("fp32"), "adamw", 2, 8)
    assert e.activation_peak_bytes > 0 and e.details["traced_layers"] == e.details["layers"] == 3


def test_file_factory_with_batch_and_loss(tmp_path):
    spec = models.resolve_model(user_file(tmp_path, MODEL_FILE + COMPANIONS) + ":build")
    model = models.build_model(spec, device="cpu")
    batch = models.make_batch(spec, 2, 8, "cpu", model=model)
    assert set(batch) == {"tokens", "targets"}
    loss = models.training_loss(spec, model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_callable_from_the_api_and_the_profile(tmp_path):
    from sgdsai_cli import profile

    result = profile(model=tiny_mlp, device="meta", optimizers=["sgdsai", "adamw"], batch_size=4)
    assert result.model.family == "factory"
    assert result.model.params == 16 * 64 + 64 + 64 * 4 + 4
    assert all(run.status == "ok" and run.memory.activation_peak_bytes > 0 for run in result.runs)
    assert models.resolve_model(tiny_mlp).config.target == f"{__name__}:tiny_mlp"


def test_lambda_is_refused_for_real_runs_only():
    from sgdsai_cli import profile

    fn = lambda: nn.Linear(8, 8)  # noqa: E731
    assert profile(model=fn, device="meta", optimizers=["sgdsai"]).runs[0].status == "ok"
    with pytest.raises(BadInput) as e:
        profile(model=fn, device="cpu", optimizers=["sgdsai"], steps=1)
    assert "cannot be imported again" in str(e.value)


def test_module_target(tmp_path, monkeypatch):
    (tmp_path / "user_pkg_11a").mkdir()
    (tmp_path / "user_pkg_11a" / "__init__.py").write_text("")
    (tmp_path / "user_pkg_11a" / "nets.py").write_text(textwrap.dedent(MODEL_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = models.resolve_model("user_pkg_11a.nets:build")
    assert spec.config.target == "user_pkg_11a.nets:build"
    d = model_spec_to_dict(spec)
    assert d["config"] == {"target": "user_pkg_11a.nets:build"}
    back = model_spec_from_dict(json.loads(json.dumps(d)))
    assert back == spec and hash(back) == hash(spec)
    assert models.count_params(models.build_model(back)) == models.count_params(models.build_model(spec))
    sys.modules.pop("user_pkg_11a.nets", None)


@pytest.mark.parametrize("target,fragment", [
    ("no_such_module_11a:build", "no module named 'no_such_module_11a'"),
    ("missing_file.py:build", "no such file"),
])
def test_bad_targets(tmp_path, monkeypatch, target, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput) as e:
        models.resolve_model(target)
    assert fragment in str(e.value)


def test_missing_attribute(tmp_path):
    with pytest.raises(BadInput) as e:
        models.resolve_model(user_file(tmp_path, MODEL_FILE) + ":nope")
    assert "has no attribute 'nope'" in str(e.value)


BROKEN = '''
from torch import nn


def build():
    layer = nn.Linear(4, 4)
    return layer.not_there
'''


def test_error_in_user_code_names_file_and_line(tmp_path, cli):
    path = user_file(tmp_path, BROKEN, "broken.py")
    r = cli("profile", "--model", f"{path}:build", "--device", "meta")
    assert r.exit_code == 2
    line = next(ln for ln in r.output.splitlines() if "AttributeError" in ln)
    assert f"{path}:7: AttributeError" in line and "Traceback" not in r.output
    r = cli("profile", "--model", f"{path}:build", "--device", "meta", "--verbose")
    assert r.exit_code == 2 and "Traceback" in r.output


def test_not_a_module(tmp_path):
    path = user_file(tmp_path, "def build():\n    return 3\n", "three.py")
    with pytest.raises(BadInput) as e:
        models.build_model(models.resolve_model(f"{path}:build"))
    assert "not an nn.Module" in str(e.value)


def test_real_cpu_run_of_a_file_factory(tmp_path):
    from sgdsai_cli import profile

    path = user_file(tmp_path, MODEL_FILE + COMPANIONS)
    result = profile(f"{path}:build", device="cpu", optimizers=["sgdsai"], steps=1, warmup=0, seq_len=8,
                     sample_interval_ms=50)
    run = result.runs[0]
    assert run.status == "ok", run.error
    assert result.model.family == "factory" and run.memory.state_bytes > 0
