"""Our native builders and transformers agree on the same config: activations and step peak within 1 %.

Every preset and every test config that maps to a native family is traced twice by the fake-tensor
estimate at batch 2 x 512 (the model's context when shorter): once as our model, once as
transformers' class built from the same config.json (``models.as_transformers``). Parameter counts
are equal exactly; activation peak and the step's estimated peak within 1 %. The deep models are
traced at the estimate's own reduced depth (three blocks, extended exactly).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sgdsai_cli import models
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.precision import resolve_precision

pytest.importorskip("transformers")

CONFIGS = Path(__file__).parent / "data" / "configs"
NATIVE_CONFIGS = [str(CONFIGS / n) for n in ("gpt2", "llama-3-8b", "vit-base-patch16-224")]
# fp32 for every model; the low-precision paths on a representative few (each pair costs 1-4 s)
CASES = (
    [(name, "fp32") for name in [*models.PRESETS, *NATIVE_CONFIGS]]
    + [(name, "amp-bf16") for name in ("tiny-gpt2", "gpt2", "tiny-llama", "llama2-7b", "vit-b16")]
    + [(name, "bf16") for name in ("gpt2-medium", "llama2-13b", "vit-s16", NATIVE_CONFIGS[1])]
)


@pytest.mark.parametrize("name,precision", CASES, ids=[f"{Path(n).name}-{p}" for n, p in CASES])
def test_native_and_transformers_agree(name, precision):
    native = models.resolve_model(name)
    assert native.family in ("gpt2", "llama", "vit")
    hf = models.as_transformers(native)
    seq = min(512, models.max_positions(native) or 512)
    p = resolve_precision(precision)
    a = est.estimate_step(native, p, "adamw", 2, seq)
    b = est.estimate_step(hf, p, "adamw", 2, seq)
    assert a.param_bytes == b.param_bytes
    assert a.activation_peak_bytes == pytest.approx(b.activation_peak_bytes, rel=0.01)
    assert a.peak_bytes == pytest.approx(b.peak_bytes, rel=0.01)
