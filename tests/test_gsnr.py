"""g-SNR analysis core: step lists, the sqrt(n-1) bound, degenerate tensors, parity with SGDSaI, corpus, plots."""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch

from sgdsai_cli.analysis.gsnr import gsnr, measure_gsnr, parse_steps
from sgdsai_cli.analysis.gsnr_summary import DEGENERATE_ACTIONS, rel_change, stability, summarise
from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.files import dumps
from sgdsai_cli.measure.devices import resolve_device as _resolve_device
from sgdsai_cli.models import BLOCK_TYPES, build_model, make_batch, resolve_model, training_loss
from sgdsai_cli.models.corpus import load_corpus
from sgdsai_cli.optim import SGDSaI, compute_gsnr
from sgdsai_cli.render.gsnr import summary_frames, tensors_csv


def analyse(model, **kwargs) -> dict:
    """The g-SNR document of ``model`` (gsnr() on the CPU unless told otherwise)."""
    kwargs.setdefault("device", "cpu")
    return gsnr(model, **kwargs).to_dict()


def resolve_device(text):
    return _resolve_device(text, auto="cpu")

# ---------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0,10,50", [0, 10, 50]), ("5,20", [0, 5, 20]), ("0", [0]), (" 0 , 3 ", [0, 3]), ([2, 4], [0, 2, 4])],
)
def test_parse_steps_valid(text, expected):
    assert parse_steps(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "comma-separated"), ("a,b", "whole numbers"), ("10,5", "increasing"), ("0,0", "increasing"),
     ("-1", "0 or more"), ("1,,2", "comma-separated"), ("0,200000", "at most"), ("1.5", "whole numbers")],
)
def test_parse_steps_invalid(text, needle):
    with pytest.raises(BadInput, match=needle):
        parse_steps(text)


@pytest.mark.parametrize(("text", "error"), [("meta", BadInput), ("tpu", BadInput), ("gpu0", BadInput)])
def test_resolve_device_rejects(text, error):
    with pytest.raises(error):
        resolve_device(text)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
@pytest.mark.parametrize("text", ["cuda", "cuda:1"])
def test_resolve_device_no_cuda_is_environment(text):
    with pytest.raises(EnvironmentUnavailable, match="CUDA is not available"):
        resolve_device(text)


@pytest.mark.parametrize(("text", "expected"), [("cpu", "cpu"), ("CPU", "cpu")])
def test_resolve_device_cpu(text, expected):
    assert resolve_device(text).type == expected


# ---------------------------------------------------------------------------------------------- the bound


def _grad(kind: str, shape, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(repr((kind, shape)).encode()))
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = torch.rand(shape, generator=g, dtype=torch.float64) < 0.05
    mask.view(-1)[0] = True  # at least one non-zero entry, so the gradient is not constant
    grads = {
        "normal": base,
        "offset": base + 3.0,  # strong sign consistency: g-SNR far above sqrt(n-1)
        "uniform_pos": torch.rand(shape, generator=g, dtype=torch.float64),
        "tiny": base * 1e-4,
        "sparse": base * mask,  # most entries zero, as an embedding's unseen rows
    }
    return grads[kind].to(dtype)


@pytest.mark.parametrize("kind", ["normal", "offset", "uniform_pos", "tiny", "sparse"])
@pytest.mark.parametrize("shape", [(2,), (7,), (64, 64), (3, 5, 11)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gsnr_at_least_sqrt_n_minus_1(kind, shape, dtype):
    grad = _grad(kind, shape, dtype)
    n = grad.numel()
    value = float(compute_gsnr(grad))
    g64 = grad.double()
    mean, var_b = g64.mean().item(), g64.var(correction=0).item()
    identity = math.sqrt(n - 1) * math.sqrt(1.0 + mean * mean / var_b)
    assert value == pytest.approx(identity, rel=1e-3)  # eps and fp32 reductions aside
    assert value >= math.sqrt(n - 1) * (1 - 1e-4)
    exact = torch.linalg.vector_norm(g64).item() / g64.std(correction=1).item()  # eps = 0, float64
    assert exact >= math.sqrt(n - 1) * (1 - 1e-12)


def test_measure_gsnr_degenerate_cases():
    shapes = {"one": (1,), "constant": (4, 4), "zero": (8,), "none": (3,), "normal": (5, 5)}
    params = {k: torch.nn.Parameter(torch.zeros(s)) for k, s in shapes.items()}
    params["one"].grad = torch.tensor([0.5])
    params["constant"].grad = torch.full((4, 4), 0.25)
    params["zero"].grad = torch.zeros(8)
    params["normal"].grad = torch.arange(25.0).reshape(5, 5)
    out = dict(zip(params, measure_gsnr(list(params.values())), strict=True))
    assert [out[k]["degenerate"] for k in shapes] == ["single_element", "constant", "zero", "no_gradient", None]
    assert out["one"]["gsnr"] == 1.0 and out["constant"]["gsnr"] == 1.0
    assert out["zero"]["gsnr"] is None and out["zero"]["grad_norm"] == 0.0
    assert out["none"]["gsnr"] is None and out["none"]["grad_norm"] is None
    assert out["normal"]["gsnr"] == pytest.approx(float(compute_gsnr(params["normal"].grad)), rel=0)
    assert set(DEGENERATE_ACTIONS) >= {v["degenerate"] for v in out.values() if v["degenerate"]}


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-vit"])
def test_values_equal_sgdsai_state(model):
    """The analysis and the optimizer use one function: SGDSaI stepped on the same gradients stores the same values."""
    spec = resolve_model(model)
    torch.manual_seed(0)
    net = build_model(spec, "cpu")
    training_loss(spec, net, make_batch(spec, 2, 16, "cpu", generator=torch.Generator().manual_seed(1))).backward()
    params = list(net.parameters())
    measured = measure_gsnr(params)
    opt = SGDSaI(params)
    opt.step()
    compared = 0
    for p, rec in zip(params, measured, strict=True):
        if rec["degenerate"] == "zero":
            assert "gsnr" not in opt.state[p]  # deferred until a non-zero gradient
            continue
        assert float(opt.state[p]["gsnr"]) == rec["gsnr"]
        compared += 1
    assert compared >= len(params) - 2


# ---------------------------------------------------------------------------------------------- analyse


@pytest.fixture(scope="module")
def tiny_doc():
    return analyse("tiny-gpt2", device="cpu", steps="0,2,5", batch_size=2, seq_len=32)


def test_analyse_document(tiny_doc):
    doc = tiny_doc
    assert doc["kind"] == "gsnr" and doc["schema_version"] == 1
    assert doc["spec"]["steps"] == [0, 2, 5] and doc["spec"]["device"] == "cpu"
    assert doc["model"]["param_tensors"] == len(doc["tensors"]) == 28
    assert sum(t["numel"] for t in doc["tensors"]) == doc["model"]["params"] == 141_056
    assert doc["data"]["kind"] == "text" and doc["data"]["source"] == "python-stdlib"
    assert doc["checks"]["sgdsai_state_equal"] == {"compared": 28, "mismatched": 0, "equal": True}
    assert list(doc["training"]["loss_by_step"]) == ["0", "2", "5"]
    json.loads(dumps(doc))  # serialisable, no NaN
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["wte.weight"]["block_type"] == "token_embedding" and by_name["wte.weight"]["layer"] is None
    assert by_name["h.1.attn.c_attn.weight"]["block_type"] == "attn_qkv"
    assert by_name["h.1.attn.c_attn.weight"]["layer"] == 1
    assert by_name["h.0.mlp.c_proj.weight"]["block_type"] == "mlp_down"
    assert by_name["h.0.attn.c_attn.bias"]["block_type"] == "bias"
    assert all(t["block_type"] in BLOCK_TYPES for t in doc["tensors"])


def test_analyse_output_obeys_bound(tiny_doc):
    """The fact on the tool's own output: g-SNR >= sqrt(numel - 1) for every non-degenerate tensor."""
    checked = 0
    for t in tiny_doc["tensors"]:
        if t["degenerate"] is None:
            assert t["gsnr_init"] >= math.sqrt(t["numel"] - 1) * (1 - 1e-5), t["name"]
            assert t["gsnr_over_sqrt_n_minus_1"] == pytest.approx(t["gsnr_init"] / math.sqrt(t["numel"] - 1))
            for value in t["gsnr_by_step"].values():
                assert value >= math.sqrt(t["numel"] - 1) * (1 - 1e-5)
            checked += 1
    assert checked == 28


def test_analyse_summary_matches_tensors(tiny_doc):
    rows = {r["block_type"]: r for r in tiny_doc["summary"]}
    assert sum(r["tensors"] for r in rows.values()) == 28
    assert rows["norm"]["tensors"] == 10 and rows["norm"]["elements"] == 640
    assert rows["attn_qkv"]["elements"] == 2 * 64 * 192
    norms = [t["gsnr_init"] for t in tiny_doc["tensors"] if t["block_type"] == "norm"]
    assert rows["norm"]["gsnr_min"] == min(norms) and rows["norm"]["gsnr_max"] == max(norms)
    assert rows["norm"]["ratio_min"] >= 1 - 1e-5
    st = tiny_doc["stability"]
    assert (st["first_step"], st["last_step"], st["tensors_compared"]) == (0, 5, 28)
    assert st["max_rel_change"] == max(r["max_rel_change"] for r in rows.values())


def test_summary_frames_and_csv(tiny_doc):
    frames = summary_frames(tiny_doc)
    assert set(frames) == {"tensors", "by_type", "by_step", "degenerate"}
    assert len(frames["tensors"]) == 28 and len(frames["by_step"]) == 28 * 3
    assert {"gsnr@0", "gsnr@2", "gsnr@5"} <= set(frames["tensors"].columns)
    assert list(frames["by_type"]["block_type"])[0] == "token_embedding"
    csv = tensors_csv(tiny_doc).splitlines()
    assert csv[0].startswith("name,block_type,layer,numel,shape,gsnr_init")
    assert len(csv) == 29 and csv[1].startswith("wte.weight,token_embedding,,32768,512x64,")


@pytest.mark.parametrize(
    ("model", "optimizer", "data_kind", "check"),
    [("tiny-llama", "adamw", "text", None), ("tiny-vit", "sgdsai", "synthetic-images", True)],
)
def test_analyse_other_families(model, optimizer, data_kind, check):
    doc = analyse(model, device="cpu", steps="0,2", optimizer=optimizer, batch_size=2, seq_len=16)
    assert doc["data"]["kind"] == data_kind
    assert doc["training"]["optimizer"] == optimizer
    state = doc["checks"]["sgdsai_state_equal"]
    assert (state["equal"] if state else None) == check
    assert all(t["block_type"] != "unknown" for t in doc["tensors"])
    assert all(list(t["gsnr_by_step"]) == ["0", "2"] for t in doc["tensors"])


def test_analyse_vit_block_types_single_step():
    doc = analyse("tiny-vit", device="cpu", steps="0", batch_size=2)
    kinds = {t["block_type"] for t in doc["tensors"]}
    assert {"patch_embedding", "class_token", "position_embedding", "attn_q", "attn_k", "attn_v", "head"} <= kinds
    assert doc["spec"]["seq_len"] is None
    assert doc["stability"]["max_rel_change"] is None  # one step only


def test_analyse_rejects_data_for_vit(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world")
    with pytest.raises(BadInput, match="ViT"):
        analyse("tiny-vit", device="cpu", data=f)


def test_analyse_seq_len_too_long():
    with pytest.raises(BadInput, match="longer than"):
        analyse("tiny-gpt2", device="cpu", seq_len=129)


# ---------------------------------------------------------------------------------------------- summaries


def _t(name, kind, by_step, numel=10, degenerate=None):
    init = by_step.get("0")
    return {"name": name, "block_type": kind, "layer": 0, "numel": numel, "gsnr_init": init,
            "gsnr_over_sqrt_n_minus_1": None if init is None else init / 3.0, "degenerate": degenerate,
            "gsnr_by_step": by_step}


@pytest.mark.parametrize(("first", "last", "expected"), [(10.0, 12.0, 0.2), (10.0, 5.0, 0.5), (0.0, 1.0, None),
                                                         (None, 1.0, None), (2.0, None, None)])
def test_rel_change(first, last, expected):
    assert rel_change(first, last) == (pytest.approx(expected) if expected is not None else None)


def test_summarise_and_stability_numbers():
    tensors = [
        _t("a", "norm", {"0": 3.0, "9": 3.3}),
        _t("b", "norm", {"0": 5.0, "9": 4.0}),
        _t("c", "norm", {"0": 4.0, "9": 4.0}),
        _t("d", "bias", {"0": 1.0, "9": 9.0}, numel=1, degenerate="single_element"),
        _t("e", "head", {"0": 30.0, "9": 31.5}, numel=100),
    ]
    rows = {r["block_type"]: r for r in summarise(tensors)}
    assert list(rows) == ["norm", "bias", "head"]  # BLOCK_TYPES order
    assert (rows["norm"]["gsnr_min"], rows["norm"]["gsnr_median"], rows["norm"]["gsnr_max"]) == (3.0, 4.0, 5.0)
    assert rows["norm"]["max_rel_change"] == pytest.approx(0.2) and rows["norm"]["max_rel_change_tensor"] == "b"
    assert rows["bias"]["degenerate"] == 1 and rows["bias"]["gsnr_median"] is None
    assert rows["bias"]["max_rel_change"] is None  # degenerate tensors are not compared
    st = stability(tensors, [0, 9])
    assert st["max_rel_change"] == pytest.approx(0.2) and st["tensors_compared"] == 4
    assert st["median_rel_change"] == pytest.approx((0.05 + 0.1) / 2)


# ---------------------------------------------------------------------------------------------- corpus


def test_stdlib_corpus_is_real_python():
    corpus = load_corpus(None, max_bytes=200_000)
    assert corpus.source == "python-stdlib" and corpus.files >= 1 and corpus.n_bytes == 200_000
    assert b"def " in bytes(corpus.data[:200_000].tolist())


@pytest.mark.parametrize(("vocab", "top"), [(50257, 255), (512, 255), (100, 99)])
def test_corpus_batches_seeded_and_in_vocab(tmp_path, vocab, top):
    f = tmp_path / "t.txt"
    f.write_bytes(bytes(range(256)) * 4)
    corpus = load_corpus(f)
    a = corpus.batch(3, 50, vocab, generator=torch.Generator().manual_seed(7))
    b = corpus.batch(3, 50, vocab, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 50) and a[0].dtype == torch.int64
    assert torch.equal(a[0][:, 1:], a[1][:, :-1])
    assert int(a[0].max()) <= top and int(a[0].min()) >= 0


def test_corpus_short_text_repeats(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abc")
    tokens, targets = load_corpus(f).batch(2, 10, 512, generator=torch.Generator().manual_seed(0))
    assert set(tokens.flatten().tolist()) == {ord("a"), ord("b"), ord("c")}


def test_corpus_folder_skips_binary(tmp_path):
    (tmp_path / "a.txt").write_text("hello ")
    (tmp_path / "b.bin").write_bytes(b"\x00\x01\x02" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("world")
    corpus = load_corpus(tmp_path)
    assert corpus.files == 2 and bytes(corpus.data.tolist()) == b"hello world"


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: p / "missing.txt", "no such file or folder"),
    (lambda p: (p / "empty.txt").write_text("") and None or p / "empty.txt", "file is empty"),
    (lambda p: p, "no non-empty text files"),
])
def test_corpus_bad_data(tmp_path, make, needle):
    with pytest.raises(BadInput, match=needle):
        load_corpus(make(tmp_path))


# ---------------------------------------------------------------------------------------------- plots


def test_gsnr_plots_write_png_and_svg(tiny_doc, tmp_path):
    from sgdsai_cli.render.gsnr_figures import FIGURES, gsnr_plots

    paths = gsnr_plots(tiny_doc, tmp_path / "figs")
    assert sorted(p.name for p in paths) == sorted(f"{s}.{f}" for s in FIGURES for f in ("png", "svg"))
    for p in paths:
        head = p.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in p.read_bytes()[:2000]
        assert p.stat().st_size > 5000


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize(("lr", "diverged"), [(1e-3, None), (50.0, 3)])
def test_divergence_stops_training(lr, diverged):
    doc = analyse("tiny-gpt2", device="cpu", steps="0,2,6", batch_size=2, seq_len=16, lr=lr)
    training = doc["training"]
    assert training["lr"] == lr and training["diverged_at_step"] == diverged
    if diverged is None:
        assert training["steps_run"] == 6 and all(v is not None for v in training["loss_by_step"].values())
    else:
        assert training["steps_run"] == diverged and training["loss_by_step"]["6"] is None
        assert all(t["gsnr_by_step"]["6"] is None for t in doc["tensors"])
        assert doc["stability"]["max_rel_change"] is None
        json.loads(dumps(doc))  # still valid JSON: no NaN


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_lr(lr):
    with pytest.raises(BadInput, match="bad lr"):
        analyse("tiny-gpt2", device="cpu", steps="0", lr=lr)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "amp-bf16"])
def test_analyse_on_cuda(precision):
    doc = analyse("tiny-gpt2", device="cuda", precision=precision, steps="0,3", batch_size=2, seq_len=32)
    assert doc["environment"]["device"]["type"] == "cuda"
    assert doc["checks"]["sgdsai_state_equal"]["equal"] is True
    assert doc["training"]["diverged_at_step"] is None
    for t in doc["tensors"]:
        if t["degenerate"] is None:
            assert t["gsnr_init"] >= math.sqrt(t["numel"] - 1) * (1 - 1e-5), t["name"]
