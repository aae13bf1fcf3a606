"""Model presets, builders, batches, config.json loading and parameter classification."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sgdsai_cli.errors import BadInput
from sgdsai_cli.models import (
    BLOCK_TYPES,
    PRESETS,
    GPT2Config,
    LlamaConfig,
    ModelSpec,
    ViTConfig,
    block_type,
    build_model,
    check_addressable,
    count_params,
    decoder_layers,
    make_batch,
    max_positions,
    resolve_model,
    training_loss,
)

TINY = ["tiny-gpt2", "tiny-llama", "tiny-vit"]

# The published counts, written out again here so a typo in the preset table cannot hide.
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "vit-s16": 22_050_664,
    "vit-b16": 86_567_656,
    "vit-l16": 304_326_632,
    "vit-h14": 632_045_800,
}


def unique_numel(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for _, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# ---------------------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_count_on_meta(name):
    spec = PRESETS[name]
    model = build_model(spec, device="meta")
    assert spec.name == name and spec.family in ("gpt2", "llama", "vit")
    assert unique_numel(model) == count_params(model) == spec.params
    assert PUBLISHED.get(name, spec.params) == spec.params
    assert all(p.device.type == "meta" for p in model.parameters())
    assert list(model.buffers()) == []  # parameters are the whole model


def test_published_table_covers_every_big_preset():
    assert set(PUBLISHED) == set(PRESETS) - set(TINY)


@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_are_small_and_same_family_code(name):
    assert PRESETS[name].params < 1_000_000


def test_presets_ordered_small_to_large_within_family():
    by_family = {}
    for spec in PRESETS.values():
        by_family.setdefault(spec.family, []).append(spec.params)
    for counts in by_family.values():
        assert counts == sorted(counts)


def test_tiny_llama_exercises_gqa():
    cfg = PRESETS["tiny-llama"].config
    assert cfg.n_kv_heads < cfg.n_heads


def test_resolve_model_returns_the_preset_itself():
    assert resolve_model("llama2-7b") is PRESETS["llama2-7b"]


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_gpt2_head_is_tied_and_counted_once(device):
    spec = PRESETS["gpt2"] if device == "meta" else PRESETS["tiny-gpt2"]
    model = build_model(spec, device=device)
    assert model.lm_head.weight is model.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # de-duplicated by identity


def test_llama_head_is_untied():
    model = build_model(PRESETS["tiny-llama"], device="cpu")
    assert model.lm_head.weight is not model.embed_tokens.weight


def test_llama2_70b_builds_on_meta_in_the_asked_dtype():
    model = build_model(PRESETS["llama2-70b"], device="meta", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "meta" for p in model.parameters())
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize(
    "name,attr,n", [("gpt2", "h", 12), ("llama2-7b", "layers", 32), ("vit-b16", "blocks", 12)]
)
def test_repeated_blocks_are_one_module_list_of_identical_blocks(name, attr, n):
    model = build_model(PRESETS[name])
    layers = decoder_layers(model)
    assert layers is getattr(model, attr) and len(layers) == n
    assert len({type(b) for b in layers}) == 1
    shapes = [[tuple(p.shape) for p in b.parameters()] for b in layers]
    assert all(s == shapes[0] for s in shapes)


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_forward_backward_cpu(name, dtype):
    spec = PRESETS[name]
    torch.manual_seed(0)
    model = build_model(spec, device="cpu", dtype=dtype)
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in model.parameters())
    gen = torch.Generator().manual_seed(1)
    batch = make_batch(spec, batch_size=2, seq_len=16, device="cpu", generator=gen)
    loss = training_loss(spec, model, batch)
    assert loss.shape == () and torch.isfinite(loss)
    n_out = spec.config.num_classes if spec.family == "vit" else spec.config.vocab_size
    assert abs(loss.item() - math.log(n_out)) < 1.0  # small init: near-uniform predictions
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", TINY)
def test_cpu_build_is_seeded(name):
    def weights():
        torch.manual_seed(123)
        return [p.detach().clone() for p in build_model(PRESETS[name], device="cpu").parameters()]

    assert all(torch.equal(a, b) for a, b in zip(weights(), weights(), strict=True))


@pytest.mark.parametrize("name", [*TINY, "llama2-7b"])
def test_meta_forward_backward(name):
    spec = PRESETS[name]
    model = build_model(spec, device="meta")
    loss = training_loss(spec, model, make_batch(spec, 2, 32, "meta"))
    assert loss.device.type == "meta" and loss.shape == ()
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


@pytest.mark.parametrize("name", TINY)
def test_build_and_train_under_fake_tensor_mode(name):
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    spec = PRESETS[name]
    with FakeTensorMode():
        model = build_model(spec, device="cpu", dtype=torch.bfloat16)
        assert all(isinstance(p, FakeTensor) and p.dtype == torch.bfloat16 for p in model.parameters())
        assert count_params(model) == spec.params
        training_loss(spec, model, make_batch(spec, 2, 8, "cpu")).backward()
        assert all(p.grad is not None for p in model.parameters())
    assert torch.get_default_dtype() == torch.float32  # build_model restores it


def test_build_rejects_non_float_dtype():
    with pytest.raises(BadInput):
        build_model(PRESETS["tiny-gpt2"], dtype=torch.int64)
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize(
    "name,device,shapes,dtypes",
    [
        ("tiny-gpt2", "cpu", [(3, 7), (3, 7)], [torch.long, torch.long]),
        ("tiny-llama", "meta", [(3, 7), (3, 7)], [torch.long, torch.long]),
        ("tiny-vit", "cpu", [(3, 3, 32, 32), (3,)], [torch.float32, torch.long]),
        ("vit-h14", "meta", [(3, 3, 224, 224), (3,)], [torch.float32, torch.long]),
    ],
)
def test_make_batch_shapes(name, device, shapes, dtypes):
    spec = PRESETS[name]
    batch = make_batch(spec, 3, 7, device)
    assert [tuple(t.shape) for t in batch] == shapes
    assert [t.dtype for t in batch] == dtypes
    assert all(t.device.type == device for t in batch)


def test_make_batch_values_and_reproducibility():
    spec = PRESETS["tiny-gpt2"]
    a = make_batch(spec, 4, 16, "cpu", generator=torch.Generator().manual_seed(5))
    b = make_batch(spec, 4, 16, "cpu", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    tokens, targets = a
    assert tokens.min() >= 0 and tokens.max() < spec.config.vocab_size
    assert torch.equal(tokens[:, 1:], targets[:, :-1])  # next-token targets
    _, labels = make_batch(PRESETS["tiny-vit"], 8, 0, "cpu", generator=torch.Generator().manual_seed(0))
    assert labels.min() >= 0 and labels.max() < PRESETS["tiny-vit"].config.num_classes


@pytest.mark.parametrize(
    "bs,seq,field,value,message",
    [
        (0, 8, "batch_size", 0, "batch_size must be a positive integer, got 0"),
        (True, 8, "batch_size", True, "batch_size must be a positive integer, got True"),
        (2, 0, "seq_len", 0, "seq_len must be a positive integer, got 0"),
        (2, 129, "seq_len", 129, "seq_len 129 is longer than tiny-gpt2's 128 positions"),
    ],
)
def test_make_batch_rejects_bad_sizes(bs, seq, field, value, message):
    with pytest.raises(BadInput) as e:
        make_batch(PRESETS["tiny-gpt2"], bs, seq, "meta")  # tiny-gpt2 has 128 positions
    assert str(e.value) == message
    assert (e.value.field, e.value.value) == (field, value)
    assert "--" not in message  # field names, never CLI flags


@pytest.mark.parametrize(
    "name,bs,seq,fragment",
    [
        ("tiny-gpt2", 2**62, 2, "a batch of 4611686018427387904 x 2 tokens is too large"),
        ("tiny-vit", 2**60, 0, "a batch of 1152921504606846976 images of 3 x 32 x 32 is too large"),
    ],
)
def test_make_batch_rejects_unaddressable_batches(name, bs, seq, fragment):
    with pytest.raises(BadInput, match=fragment):
        make_batch(PRESETS[name], bs, seq, "meta")


def test_llama_sequence_is_not_capped_by_its_trained_context():
    tokens, _ = make_batch(PRESETS["tiny-llama"], 1, 300, "meta")  # max_position_embeddings is 256
    assert tokens.shape == (1, 300)


@pytest.mark.parametrize("name,expected", [("gpt2", 1024), ("tiny-llama", 256), ("llama2-7b", 4096), ("vit-b16", None)])
def test_max_positions(name, expected):
    assert max_positions(PRESETS[name]) == expected


def test_check_addressable_keeps_its_old_name():
    from sgdsai_cli.models import _addressable

    assert _addressable is check_addressable
    check_addressable("a small tensor", (2, 3))
    with pytest.raises(BadInput, match="a huge tensor is too large"):
        check_addressable("a huge tensor", (2**31, 2**31), element_bytes=2)


# ---------------------------------------------------------------------------------------------- config.json


def hf_config(name: str) -> dict:
    """The Hugging Face config.json of a preset, written with HF's field names (as on the Hub)."""
    c = PRESETS[name].config
    if isinstance(c, GPT2Config):
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "activation_function": "gelu_new",
            "vocab_size": c.vocab_size,
            "n_positions": c.n_positions,
            "n_ctx": c.n_positions,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": None,
            "layer_norm_epsilon": 1e-5,
        }
    if isinstance(c, LlamaConfig):
        return {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_act": "silu",
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "max_position_embeddings": c.max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "torch_dtype": "float16",
        }
    assert isinstance(c, ViTConfig)
    return {
        "model_type": "vit",
        "architectures": ["ViTForImageClassification"],
        "image_size": c.image_size,
        "patch_size": c.patch_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "intermediate_size": c.intermediate_size,
        "num_channels": c.num_channels,
        "id2label": {str(i): f"class{i}" for i in range(c.num_classes)},
        "layer_norm_eps": 1e-12,
        "qkv_bias": True,
    }


def write(tmp_path, obj, name="config.json") -> str:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("name", ["gpt2", "llama2-70b", "vit-b16", "tiny-gpt2", "tiny-llama", "tiny-vit"])
def test_config_json_round_trip(tmp_path, name):
    path = write(tmp_path, hf_config(name))
    spec = resolve_model(path)
    assert spec == ModelSpec(name=path, family=PRESETS[name].family, config=PRESETS[name].config, params=None)
    assert count_params(build_model(spec)) == PRESETS[name].params


def test_config_directory_means_its_config_json(tmp_path):
    write(tmp_path, hf_config("tiny-llama"))
    assert resolve_model(str(tmp_path)).config == PRESETS["tiny-llama"].config


@pytest.mark.parametrize(
    "edit,check",
    [
        ({"num_key_value_heads": None}, lambda c: c.n_kv_heads == c.n_heads),  # default: plain MHA
        ({"tie_word_embeddings": True}, lambda c: c.tie_word_embeddings),
        ({"rope_theta": 500000.0}, lambda c: c.rope_theta == 500000.0),
    ],
)
def test_llama_config_options(tmp_path, edit, check):
    cfg = {**hf_config("tiny-llama"), **edit}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    assert check(resolve_model(write(tmp_path, cfg)).config)


def test_tied_llama_from_config_counts_head_once(tmp_path):
    spec = resolve_model(write(tmp_path, {**hf_config("tiny-llama"), "tie_word_embeddings": True}))
    c = spec.config
    assert count_params(build_model(spec)) == PRESETS["tiny-llama"].params - c.vocab_size * c.hidden_size


@pytest.mark.parametrize(
    "labels,expected", [({"num_labels": 7}, 7), ({"id2label": {"0": "a", "1": "b"}}, 2), ({}, 2)]
)
def test_vit_num_classes(tmp_path, labels, expected):
    cfg = {k: v for k, v in hf_config("tiny-vit").items() if k != "id2label"}
    assert resolve_model(write(tmp_path, {**cfg, **labels})).config.num_classes == expected


def test_unknown_preset_suggests_close_match():
    with pytest.raises(BadInput) as e:
        resolve_model("llama2-7")
    msg = str(e.value)
    assert "unknown model 'llama2-7'" in msg and "did you mean" in msg and "llama2-7b" in msg
    assert "\n" not in msg


def test_preset_names_are_case_insensitive():
    assert resolve_model("GPT2-Medium") is PRESETS["gpt2-medium"]


# (contents, expected message fragments): every message names the file and, where one is at fault, the field
BAD_CONFIGS = [
    ("{not json", ["not valid JSON"]),
    ("[1, 2]", ["JSON object"]),
    ({"model_type": "no-such-arch", "hidden_size": 8}, ["'no-such-arch'", "not known to transformers"]),
    ({"hidden_size": 8}, ["'model_type'", "missing"]),
    ({**hf_config("tiny-llama"), "hidden_size": None}, ["'hidden_size'", "missing"]),
    ({**hf_config("tiny-llama"), "hidden_size": "64"}, ["'hidden_size'", "positive integer"]),
    ({**hf_config("tiny-llama"), "hidden_size": 64.0}, ["'hidden_size'", "positive integer"]),
    ({**hf_config("tiny-llama"), "num_hidden_layers": 0}, ["'num_hidden_layers'", "positive integer"]),
    ({**hf_config("tiny-llama"), "num_hidden_layers": True}, ["'num_hidden_layers'", "positive integer"]),
    ({**hf_config("tiny-llama"), "num_attention_heads": 5}, ["'hidden_size'", "divisible"]),
    ({**hf_config("tiny-llama"), "num_key_value_heads": 3}, ["'num_key_value_heads'", "divisible"]),
    ({**hf_config("tiny-llama"), "rms_norm_eps": "x"}, ["'rms_norm_eps'"]),
    ({**hf_config("tiny-llama"), "tie_word_embeddings": "yes"}, ["'tie_word_embeddings'"]),
    ({**hf_config("tiny-llama"), "attention_bias": "yes"}, ["'attention_bias'", "true or false"]),
    ({**hf_config("tiny-gpt2"), "n_layer": None}, ["'n_layer'", "missing"]),
    ({**hf_config("tiny-gpt2"), "n_head": 3}, ["'n_embd'", "divisible"]),
    ({**hf_config("tiny-gpt2"), "n_inner": "x"}, ["'n_inner'", "positive integer"]),
    ({**hf_config("tiny-gpt2"), "attn_pdrop": 1.5}, ["'attn_pdrop'", "probability"]),
    ({**hf_config("tiny-vit"), "patch_size": 7}, ["'image_size'", "divisible"]),
    ({**hf_config("tiny-vit"), "image_size": [32, 32]}, ["'image_size'", "positive integer"]),
    ({**hf_config("tiny-vit"), "id2label": {}}, ["'id2label'"]),
]


@pytest.mark.parametrize("contents,fragments", BAD_CONFIGS)
def test_bad_config_json(tmp_path, contents, fragments):
    if isinstance(contents, dict):
        contents = json.dumps({k: v for k, v in contents.items() if v is not None})
    path = write(tmp_path, contents, "bad_config.json")
    with pytest.raises(BadInput) as e:
        resolve_model(path)
    msg = str(e.value)
    assert msg.startswith(path + ":"), msg
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


@pytest.mark.parametrize("path", ["missing.json", "no/such/dir/config.json"])
def test_missing_config_file(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput) as e:
        resolve_model(path)
    assert str(e.value) == f"{path}: no such file"


def test_unreadable_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(BadInput) as e:
        resolve_model(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "edit,field,value",
    [
        ({"hidden_size": "64"}, "hidden_size", "64"),
        ({"num_key_value_heads": 3}, "num_attention_heads", 4),
        ({"attention_bias": "yes"}, "attention_bias", "yes"),
    ],
)
def test_config_errors_carry_field_and_value(tmp_path, edit, field, value):
    with pytest.raises(BadInput) as e:
        resolve_model(write(tmp_path, {**hf_config("tiny-llama"), **edit}))
    assert (e.value.field, e.value.value) == (field, value)


def test_unknown_preset_error_carries_the_value():
    with pytest.raises(BadInput) as e:
        resolve_model("gpt3")
    assert e.value.value == "gpt3"


# ---------------------------------------------------------------------------------------------- block_type


@pytest.mark.parametrize("name", ["gpt2", "llama2-70b", "vit-b16", *TINY])
def test_block_type_covers_every_parameter(name):
    spec = PRESETS[name]
    model = build_model(spec)
    n_layers = len(decoder_layers(model))
    seen = set()
    for pname, _ in model.named_parameters(remove_duplicate=False):
        kind, layer = block_type(pname, spec.family)
        assert kind in BLOCK_TYPES, pname
        seen.add(kind)
        in_block = pname.split(".")[0] in ("h", "layers", "blocks")
        assert (layer is not None) == in_block, pname
        assert layer is None or 0 <= layer < n_layers
    expected = {
        "gpt2": {
            "token_embedding",
            "position_embedding",
            "attn_qkv",
            "attn_out",
            "mlp_up",
            "mlp_down",
            "norm",
            "bias",
            "head",
        },
        "llama": {
            "token_embedding",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_out",
            "mlp_gate",
            "mlp_up",
            "mlp_down",
            "norm",
            "head",
        },
        "vit": {
            "patch_embedding",
            "class_token",
            "position_embedding",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_out",
            "mlp_up",
            "mlp_down",
            "norm",
            "bias",
            "head",
        },
    }[spec.family]
    assert seen == expected


@pytest.mark.parametrize(
    "family,pname,expected",
    [
        ("gpt2", "wte.weight", ("token_embedding", None)),
        ("gpt2", "wpe.weight", ("position_embedding", None)),
        ("gpt2", "h.3.attn.c_attn.weight", ("attn_qkv", 3)),
        ("gpt2", "h.3.attn.c_attn.bias", ("bias", 3)),
        ("gpt2", "h.11.attn.c_proj.weight", ("attn_out", 11)),
        ("gpt2", "h.0.mlp.c_fc.weight", ("mlp_up", 0)),
        ("gpt2", "h.0.mlp.c_proj.weight", ("mlp_down", 0)),
        ("gpt2", "h.0.mlp.c_proj.bias", ("bias", 0)),
        ("gpt2", "h.0.ln_1.bias", ("norm", 0)),
        ("gpt2", "ln_f.weight", ("norm", None)),
        ("gpt2", "lm_head.weight", ("head", None)),
        ("gpt2", "transformer.h.2.mlp.c_proj.weight", ("mlp_down", 2)),  # HF checkpoint names
        ("llama", "embed_tokens.weight", ("token_embedding", None)),
        ("llama", "layers.7.self_attn.q_proj.weight", ("attn_q", 7)),
        ("llama", "layers.7.self_attn.k_proj.weight", ("attn_k", 7)),
        ("llama", "layers.7.self_attn.v_proj.weight", ("attn_v", 7)),
        ("llama", "layers.7.self_attn.o_proj.weight", ("attn_out", 7)),
        ("llama", "layers.7.mlp.gate_proj.weight", ("mlp_gate", 7)),
        ("llama", "layers.7.mlp.up_proj.weight", ("mlp_up", 7)),
        ("llama", "layers.7.mlp.down_proj.weight", ("mlp_down", 7)),
        ("llama", "layers.7.input_layernorm.weight", ("norm", 7)),
        ("llama", "layers.7.post_attention_layernorm.weight", ("norm", 7)),
        ("llama", "norm.weight", ("norm", None)),
        ("llama", "lm_head.weight", ("head", None)),
        ("llama", "model.layers.79.mlp.down_proj.weight", ("mlp_down", 79)),
        ("vit", "patch_embed.proj.weight", ("patch_embedding", None)),
        ("vit", "patch_embed.proj.bias", ("bias", None)),
        ("vit", "cls_token", ("class_token", None)),
        ("vit", "pos_embed", ("position_embedding", None)),
        ("vit", "blocks.5.attn.qkv.weight", ("attn_qkv", 5)),
        ("vit", "blocks.5.attn.proj.weight", ("attn_out", 5)),
        ("vit", "blocks.5.mlp.fc1.weight", ("mlp_up", 5)),
        ("vit", "blocks.5.mlp.fc2.bias", ("bias", 5)),
        ("vit", "blocks.5.norm1.weight", ("norm", 5)),
        ("vit", "norm.bias", ("norm", None)),
        ("vit", "head.weight", ("head", None)),
        ("vit", "head.bias", ("bias", None)),
        ("vit", "vit.embeddings.patch_embeddings.projection.weight", ("patch_embedding", None)),
        ("vit", "vit.embeddings.position_embeddings", ("position_embedding", None)),
        ("vit", "vit.encoder.layer.1.attention.attention.query.weight", ("attn_q", 1)),
        ("vit", "vit.encoder.layer.1.attention.output.dense.weight", ("attn_out", 1)),
        ("vit", "vit.encoder.layer.1.intermediate.dense.weight", ("mlp_up", 1)),
        ("vit", "vit.encoder.layer.1.output.dense.weight", ("mlp_down", 1)),
        ("vit", "vit.encoder.layer.1.layernorm_before.bias", ("norm", 1)),
        ("vit", "vit.layers.1.attention.v_proj.weight", ("attn_v", 1)),
        ("vit", "classifier.weight", ("head", None)),
        ("llama", "something.else", ("unknown", None)),
    ],
)
def test_block_type_names(family, pname, expected):
    assert block_type(pname, family) == expected


# ---------------------------------------------------------------------------------------------- corpus


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p / "missing.txt", "data '{path}': no such file or folder"),
        (lambda p: (p / "empty.txt").write_text("") and None or p / "empty.txt", "data '{path}': file is empty"),
    ],
)
def test_corpus_errors_name_the_data_field(tmp_path, make, message):
    from sgdsai_cli.models.corpus import load_corpus

    path = make(tmp_path)
    with pytest.raises(BadInput) as e:
        load_corpus(path)
    assert str(e.value) == message.format(path=path)
    assert (e.value.field, e.value.value) == ("data", str(path))


def test_corpus_without_stdlib_sources_asks_for_data(tmp_path, monkeypatch):
    from sgdsai_cli.models import corpus

    monkeypatch.setattr(corpus, "stdlib_dir", lambda: tmp_path)
    with pytest.raises(BadInput, match="^data must name a text file or folder") as e:
        corpus.load_corpus(None)
    assert e.value.field == "data"


@pytest.mark.parametrize(
    "args,field", [((0, 8, 256), "batch_size"), ((2, 0, 256), "seq_len"), ((2, 8, 0), "vocab_size")]
)
def test_corpus_batch_rejects_non_positive_sizes(tmp_path, args, field):
    from sgdsai_cli.models.corpus import load_corpus

    (tmp_path / "a.txt").write_text("hello world")
    with pytest.raises(BadInput, match=f"^{field} must be positive, got 0$") as e:
        load_corpus(tmp_path / "a.txt").batch(*args)
    assert (e.value.field, e.value.value) == (field, 0)
