"""QLoRA's 4-bit base (models.quantize): bitsandbytes' own Linear4bit on real, meta and fake tensors.

The bytes of meta and fake quantisations (bnb's storage format) equal, to the byte, those of real
CPU quantisations; what is skipped is what transformers skips; QLoRA trains on CPU with only the
adapters changing; its forward and backward trace under FakeTensorMode to the same peak as the real run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("bitsandbytes")

from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily  # noqa: E402

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable  # noqa: E402
from sgdsai_cli.measure.tracker import LiveTracker  # noqa: E402
from sgdsai_cli.models import build_model, make_batch, resolve_model, training_loss  # noqa: E402
from sgdsai_cli.models import quantize as qz  # noqa: E402
from sgdsai_cli.models.quantize import default_skips, linear4bit_bytes, quantize_linears  # noqa: E402


def _linear(out_features: int, in_features: int, kind: str, dtype=torch.float32, bias=False):
    """A one-layer model, its weight real (seeded), meta or fake, and the fake mode if any."""
    if kind == "real":
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(in_features, out_features, bias=bias, dtype=dtype)), None
    if kind == "meta":
        return nn.Sequential(nn.Linear(in_features, out_features, bias=bias, dtype=dtype, device="meta")), None
    mode = FakeTensorMode()
    with mode:
        return nn.Sequential(nn.Linear(in_features, out_features, bias=bias, dtype=dtype)), mode


def _parts(layer) -> dict[str, tuple]:
    """(shape, dtype, storage bytes) of every tensor of a Linear4bit's weight and quant state."""
    st = layer.weight.quant_state
    tensors = {"weight": layer.weight, "absmax": st.absmax, "code": st.code}
    if st.nested:
        tensors.update(offset=st.offset, nested_absmax=st.state2.absmax, nested_code=st.state2.code)
    return {k: (tuple(t.shape), t.dtype, t.untyped_storage().nbytes()) for k, t in tensors.items()}


# odd element counts, fewer elements than a block, counts not divisible by the block, > 256 blocks (nested)
SHAPES = [(1, 1), (3, 5), (7, 9), (64, 64), (33, 65), (130, 100), (300, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("quant_type, double_quant, blocksize, dtype", [
    ("nf4", True, 64, torch.float32), ("nf4", False, 64, torch.bfloat16), ("fp4", True, 128, torch.float16),
    ("fp4", False, 32, torch.float32),
])
def test_format_bytes_equal_real_quantisation(shape, quant_type, double_quant, blocksize, dtype):
    """Meta and fake quantisations (bnb's format) have the storages of real CPU ones, tensor by tensor."""
    opts = dict(quant_type=quant_type, double_quant=double_quant, blocksize=blocksize, skip=())
    seen = {}
    for kind in ("real", "meta", "fake", "fake, mode not active"):
        model, mode = _linear(*shape, kind, dtype)
        with mode if mode is not None and kind == "fake" else contextlib.nullcontext():
            summary = quantize_linears(model, **opts)
        seen[kind] = (_parts(model[0]), summary)
        assert summary.bytes_source == ("measured" if kind == "real" else "format")
    real_parts, real = seen["real"]
    for kind in ("meta", "fake", "fake, mode not active"):
        parts, summary = seen[kind]
        assert parts == real_parts, kind
        assert (summary.weight_bytes, summary.absmax_bytes, summary.code_bytes, summary.nested_bytes) == \
               (real.weight_bytes, real.absmax_bytes, real.code_bytes, real.nested_bytes)
    n = shape[0] * shape[1]
    assert real_parts["weight"] == (((n + 1) // 2, 1), torch.uint8, (n + 1) // 2)
    formula = linear4bit_bytes(*shape, double_quant=double_quant, blocksize=blocksize)
    assert (real.weight_bytes, real.absmax_bytes, real.code_bytes, real.nested_bytes) == \
           (formula.weight_bytes, formula.absmax_bytes, formula.code_bytes, formula.nested_bytes)
    assert real.state_bytes == formula.state_bytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("double_quant", [False, True])
def test_format_bytes_equal_cuda_quantisation(double_quant):
    seen = {}
    for device in ("cuda", "meta"):
        model = nn.Sequential(nn.Linear(65, 33, bias=False, device=device))
        summary = quantize_linears(model, double_quant=double_quant, skip=())
        seen[device] = (_parts(model[0]), summary.total_bytes)
    assert seen["cuda"] == seen["meta"]


@pytest.mark.parametrize("double_quant", [False, True])
def test_real_quantisation_is_bitsandbytes_own(double_quant):
    """The measured tensors are bnb's quantize_4bit of the weight, and dequantise back close to it."""
    import bitsandbytes as bnb

    model, _ = _linear(48, 80, "real")
    w = model[0].weight.detach().clone()
    quantize_linears(model, double_quant=double_quant, skip=())
    layer = model[0]
    assert type(layer) is bnb.nn.Linear4bit and type(layer.weight) is bnb.nn.Params4bit
    data, state = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    assert torch.equal(layer.weight.data, data)
    assert torch.equal(layer.weight.quant_state.absmax, state.absmax)
    back = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    assert back.shape == w.shape and (back - w).abs().max() < 0.2 * w.abs().max()


def test_meta_double_quant_matches_bnb_own_nested_step():
    """The nested step spelled out for meta tensors gives what bnb's quantize_4bit gives on meta."""
    import bitsandbytes as bnb

    F = bnb.functional
    F.quantize_4bit(torch.ones(64), compress_statistics=True)  # bnb's cached 8-bit code on CPU, as a real run makes it
    w = torch.empty(130, 100, device="meta")
    own_data, own = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    data, state = qz._quantize_without_data(bnb, w, "nf4", True, 64)
    for a, b in [(data, own_data), (state.absmax, own.absmax), (state.code, own.code), (state.offset, own.offset),
                 (state.state2.absmax, own.state2.absmax), (state.state2.code, own.state2.code)]:
        assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
    assert (state.blocksize, state.state2.blocksize, state.quant_type, state.shape) == \
           (own.blocksize, own.state2.blocksize, own.quant_type, own.shape)


def test_llama2_7b_on_meta():
    """Every linear of the 32 decoder blocks in 4 bits, lm_head kept; the figures docs/qlora.md shows."""
    rows = {}
    for dq in (False, True):
        model = build_model(resolve_model("llama2-7b"), device="meta", dtype=torch.bfloat16)
        s = quantize_linears(model, double_quant=dq)
        rows[dq] = s
        assert s.modules_replaced == 32 * 7 and s.skipped == ("lm_head",) and s.bytes_source == "format"
        assert s.quantized_elements == 6_476_005_376  # 32 x (4 x 4096^2 + 3 x 4096 x 11008)
        assert s.weight_bytes == 3_238_002_688
        assert model.lm_head.weight.dtype == torch.bfloat16 and model.embed_tokens.weight.dtype == torch.bfloat16
    assert (rows[False].absmax_bytes, rows[False].code_bytes, rows[False].nested_bytes) == (404_750_336, 14_336, 0)
    assert (rows[True].absmax_bytes, rows[True].code_bytes, rows[True].nested_bytes) == \
           (101_187_584, 14_336, 1_811_328)
    assert rows[False].state_bytes == 404_764_672 and rows[True].state_bytes == 103_013_248
    doc = rows[True].to_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["compute_dtype"] == "bfloat16"
    assert (doc["modules_replaced"], doc["skipped"], doc["state_bytes"]) == (224, ["lm_head"], 103_013_248)


def test_llama2_7b_prepared_for_kbit_training():
    """peft's prepare_model_for_kbit_training on our quantised model: the kept parameters in fp32."""
    peft = pytest.importorskip("peft")
    model = build_model(resolve_model("llama2-7b"), device="meta", dtype=torch.bfloat16)
    quantize_linears(model)
    peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    kept = [p for p in model.parameters() if p.dtype != torch.uint8]
    assert {p.dtype for p in kept} == {torch.float32} and sum(p.numel() for p in kept) == 262_410_240
    assert sum(p.untyped_storage().nbytes() for p in kept) == 1_049_640_960


# ----------------------------------------------------------------------------------------------
# what is kept in full precision


@pytest.mark.parametrize("name, kept", [
    ("tiny-llama", ["lm_head"]),
    ("tiny-gpt2", ["lm_head", "ln_f.bias", "wte"]),  # tied head and embedding; the last parameter's module
    ("tiny-vit", ["head.bias"]),  # transformers strips ".weight" only: a head ending in a bias is quantised
])
def test_default_skips(name, kept):
    model = build_model(resolve_model(name), device="meta")
    assert default_skips(model) == kept
    s = quantize_linears(model)
    assert all(type(m) is not nn.Linear for n, m in model.named_modules() if n in s.replaced)
    assert all(type(model.get_submodule(n)) is nn.Linear for n in s.skipped)
    assert not any(isinstance(m, nn.Embedding) and m.weight.dtype == torch.uint8 for m in model.modules())


@pytest.mark.parametrize("config", ["gemma-2b", "phi-3-mini-4k", "mixtral-8x7b-v0.1"])
def test_default_skips_are_transformers_own(config):
    pytest.importorskip("transformers")
    from transformers.quantizers.base import get_keys_to_not_convert

    model = build_model(resolve_model(f"tests/data/configs/{config}/config.json"), device="meta")
    assert default_skips(model) == sorted(get_keys_to_not_convert(model))


def test_name_rule_is_transformers_own():
    pytest.importorskip("transformers")
    from transformers.quantizers.quantizers_utils import should_convert_module

    names = ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.11.self_attn.q_proj", "head", "fc1"]
    for pattern in ["lm_head", "down_proj", "model.layers.1", "model.layers.11", "head", "fc1", "layers.*q_proj"]:
        for name in names:
            assert qz._matches(name, pattern) == (not should_convert_module(name, [pattern])), (name, pattern)


def test_explicit_skip_and_conv1d():
    """transformers' GPT-2 (Conv1D, transposed): skip=... keeps the named modules; the rest computes close."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).train()
    ids = torch.randint(0, 64, (2, 8))
    before = model(input_ids=ids, labels=ids).loss
    s = quantize_linears(model, skip=["lm_head", "c_proj"], compute_dtype="fp32")
    assert s.replaced == ("transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc")
    assert s.skipped == ("transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj", "lm_head")
    assert model.transformer.h[0].attn.c_attn.weight.quant_state.shape == torch.Size([96, 32])  # [out, in]
    assert abs(model(input_ids=ids, labels=ids).loss.item() - before.item()) < 0.05


# ----------------------------------------------------------------------------------------------
# QLoRA: frozen base, adapters train (CPU), and the fake-tensor trace


def _lora_config(targets=("q_proj", "v_proj")):
    from peft import LoraConfig

    return LoraConfig(r=8, target_modules=list(targets))


def _adapters(model):
    return [m for n, m in model.named_modules() if n.endswith((".lora_A", ".lora_B"))]


def _real_qlora(name="tiny-llama", targets=("q_proj", "v_proj"), dtype=torch.float32):
    pytest.importorskip("peft")
    from peft import inject_adapter_in_model

    spec = resolve_model(name)
    torch.manual_seed(0)
    model = build_model(spec, device="cpu", dtype=dtype)
    summary = quantize_linears(model)
    inject_adapter_in_model(_lora_config(targets), model)
    for a in _adapters(model):  # fp32 adapters, as get_peft_model's autocast_adapter_dtype makes them
        a.to(torch.float32)
    return spec, model, summary


def _base_tensors(model) -> dict[str, torch.Tensor]:
    """Every frozen tensor: parameters and the quant state of each Linear4bit."""
    import bitsandbytes as bnb

    out = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for n, m in model.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            for part, tensors in qz._state_tensors(m.weight.quant_state).items():
                out.update({f"{n}.{part}{i}": t.clone() for i, t in enumerate(tensors)})
    return out


def _quantised_bytes(model) -> int:
    import bitsandbytes as bnb

    from sgdsai_cli.measure.storage import unique_bytes

    tensors = []
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            tensors.append(m.weight)
            tensors += [t for ts in qz._state_tensors(m.weight.quant_state).values() for t in ts]
    return unique_bytes(tensors)


def test_qlora_trains_adapters_only_on_cpu():
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    from sgdsai_cli.optim.sgdsai import SGDSaI

    spec, model, summary = _real_qlora()
    assert isinstance(model.layers[0].self_attn.q_proj, LoraLinear4bit)  # peft's 4-bit LoRA layer
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".lora_" not in n)
    base, start = _base_tensors(model), {n: p.detach().clone() for n, p in trainable.items()}
    opt = SGDSaI(trainable.values(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        loss = training_loss(spec, model, make_batch(spec, 2, 16, device="cpu", generator=gen))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _base_tensors(model)
    assert after.keys() == base.keys() and all(torch.equal(after[k], base[k]) for k in base)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert all(not torch.equal(p, start[n]) for n, p in trainable.items())  # A too: B moved first
    assert _quantised_bytes(model) == summary.total_bytes  # the 4-bit base is what it was


@pytest.mark.parametrize("name, targets, dtype", [
    ("tiny-llama", ("q_proj", "v_proj"), torch.float32),
    ("tiny-llama", ("q_proj", "v_proj"), torch.bfloat16),
    ("tiny-gpt2", ("c_attn",), torch.float32),  # biases (bnb casts them to the compute dtype), a tied head
    ("tiny-vit", ("query", "value"), torch.float32),
])
def test_qlora_forward_backward_under_fake_tensor_mode_matches_real(name, targets, dtype):
    """Fake build, quantisation and LoRA: forward + backward trace to the real CPU run's peak, to the byte.

    peft injects outside the mode with meta adapters (its .to() of a fake parameter cannot swap), made
    fake parameters after, as models.lora does."""
    pytest.importorskip("peft")
    from peft import inject_adapter_in_model

    spec, model, real_summary = _real_qlora(name, targets, dtype)
    batch = make_batch(spec, 2, 16, device="cpu", generator=torch.Generator().manual_seed(1))
    real = LiveTracker()
    with real:
        real_loss = training_loss(spec, model, batch)
        real_loss.backward()
    import bitsandbytes as bnb

    biases = [m.bias for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert all(b.dtype == torch.bfloat16 for b in biases if b is not None)  # bnb's forward cast them
    assert sum(b.untyped_storage().nbytes() for b in biases if b is not None) == 2 * real_summary.bias_elements

    mode = FakeTensorMode()
    with mode:
        fake = build_model(spec, device="cpu", dtype=dtype)
        summary = quantize_linears(fake)
    with unset_fake_temporarily():
        inject_adapter_in_model(_lora_config(targets), fake, low_cpu_mem_usage=True)
    with mode:
        for a in _adapters(fake):
            for sub in a.modules():
                for name, p in [(n, p) for n, p in sub._parameters.items() if p is not None]:
                    sub._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=torch.float32),
                                                         requires_grad=p.requires_grad)
        fake_batch = make_batch(spec, 2, 16, device="cpu")
    traced = LiveTracker()
    with mode, traced:
        loss = training_loss(spec, fake, fake_batch)
        loss.backward()
    assert torch.isfinite(real_loss) and isinstance(loss, FakeTensor) and summary.bytes_source == "format"
    assert all(isinstance(p.grad, FakeTensor) for p in fake.parameters() if p.requires_grad)
    assert (traced.peak, traced.live) == (real.peak, real.live)


# ----------------------------------------------------------------------------------------------
# errors and the quiet import


@pytest.mark.parametrize("options, field, named", [
    (dict(quant_type="int4"), "quant_type", "'int4'"), (dict(quant_type=4), "quant_type", "4"),
    (dict(double_quant="yes"), "double_quant", "'yes'"), (dict(compute_dtype=torch.int8), "compute_dtype", "int8"),
    (dict(compute_dtype="fp8"), "compute_dtype", "'fp8'"), (dict(blocksize=48), "blocksize", "48"),
    (dict(blocksize=True), "blocksize", "True"), (dict(skip="lm_head"), "skip", "'lm_head'"),
    (dict(skip=["lm_haed"]), "skip", "'lm_haed'"), (dict(skip=["0"]), "qlora", "'0'"),
])
def test_bad_options_name_the_value(options, field, named):
    model, _ = _linear(8, 8, "meta")
    with pytest.raises(BadInput) as info:
        quantize_linears(model, **options)
    assert info.value.field == field and named in str(info.value)
    assert "\n" not in str(info.value)
    assert type(model[0]) is nn.Linear  # nothing was replaced


def test_missing_bitsandbytes_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    model, _ = _linear(8, 8, "meta")
    with pytest.raises(EnvironmentUnavailable, match=r"pip install 'sgdsai\[bnb\]'"):
        quantize_linears(model, skip=())
    assert type(model[0]) is nn.Linear


_FIRST_IMPORT = """
import logging, sys, torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from sgdsai_cli.measure.tracker import LiveTracker
from sgdsai_cli.models.quantize import quantize_linears
assert "bitsandbytes" not in sys.modules
mode = FakeTensorMode()
with mode:
    model = nn.Sequential(nn.Linear(8, 8))
tracker = LiveTracker()
with mode, tracker:  # bitsandbytes is first imported here, inside a fake mode and a tracker
    summary = quantize_linears(model, skip=())
import bitsandbytes.backends.utils as tables
print(logging.getLogger("bitsandbytes").level, type(tables._NF4_QUANT_TABLE).__name__,
      tracker.live == summary.total_bytes)
"""


def test_first_import_is_quiet_real_and_leaves_logging_as_it_was():
    """No warning line, logging as it was, bnb's module tables real tensors even when first imported
    under FakeTensorMode, and a quantisation under a tracker allocates exactly its summary's bytes."""
    done = subprocess.run([sys.executable, "-c", _FIRST_IMPORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.split() == [str(logging.NOTSET), "Tensor", "True"]


def test_unknown_skip_suggests_the_module():
    model = build_model(resolve_model("tiny-llama"), device="meta")
    with pytest.raises(BadInput, match=r"no module named 'lm_haed' in the model \(did you mean lm_head\?\)"):
        quantize_linears(model, skip=["lm_haed"])
