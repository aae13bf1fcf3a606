"""plan --fit: the ladder of recipes per GPU and optimizer, each planned exactly as plan plans it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")

from sgdsai_cli.analysis.plan import plan  # noqa: E402
from sgdsai_cli.analysis.plan_fit import first_fit  # noqa: E402

LADDER = ["full fp32", "full bf16", "full bf16 + checkpointing", "LoRA r=16 bf16", "LoRA r=16 bf16 + checkpointing",
          "QLoRA r=16 nf4", "QLoRA r=16 nf4 + checkpointing"]
KW = dict(seq_len=16, context_bytes=0, optimizers=["sgdsai", "adamw"])


@pytest.fixture(scope="module")
def fit_doc() -> dict:
    return plan("tiny-llama", precisions=["fp32"], gpus=["custom:2MiB", "custom:1MiB"], fit=True, **KW).to_dict()


def test_every_rung_for_every_gpu_and_optimizer(fit_doc):
    rows = fit_doc["fit_rows"]
    assert list(dict.fromkeys(r["recipe"] for r in rows)) == LADDER
    assert len(rows) == len(LADDER) * 2 * 2
    trainable = {r["recipe"]: r["trainable_params"] for r in rows}
    assert trainable["full fp32"] == 158_016 and trainable["LoRA r=16 bf16"] == 2 * (16 * 64 * 2 + 16 * 64 + 16 * 32)
    assert trainable["QLoRA r=16 nf4"] == trainable["LoRA r=16 bf16"]
    qlora = next(r for r in rows if r["recipe"] == "QLoRA r=16 nf4")
    lora = next(r for r in rows if r["recipe"] == "LoRA r=16 bf16")
    assert qlora["lora"] == "r=16,alpha=32,quant=nf4" and qlora["model_state_bytes"] < lora["model_state_bytes"]
    for r in rows:
        assert r["short_bytes"] == (0 if r["fits"] else r["total_bytes"] - r["gpu_memory_bytes"])
        assert r["fits"] == (r["total_bytes"] <= r["gpu_memory_bytes"]) and (r["max_batch_size"] > 0) == r["fits"]


@pytest.mark.parametrize("recipe", LADDER)
def test_each_rung_is_what_plan_says_for_that_recipe(fit_doc, recipe):
    rung = [r for r in fit_doc["fit_rows"] if r["recipe"] == recipe]
    first = rung[0]
    alone = plan("tiny-llama", precisions=[first["precision"]], gpus=["custom:2MiB", "custom:1MiB"],
                 activation_checkpointing=first["activation_checkpointing"], lora=first["lora"], **KW).rows
    assert [(r["optimizer"], r["gpu"], r["total_bytes"], r["max_batch_size"]) for r in rung] == [
        (a.optimizer, a.gpu, a.total_bytes, a.max_batch_size) for a in alone]


def test_first_fit_is_the_most_faithful_rung_that_fits_else_the_least_short(fit_doc):
    best = first_fit(fit_doc["fit_rows"])
    two, one = "custom:2MiB", "custom:1MiB"
    assert best[(two, "sgdsai")]["recipe"] == "full fp32" and best[(two, "adamw")]["recipe"] == "full bf16"
    for opt in ("sgdsai", "adamw"):
        lean = best[(one, opt)]
        assert not lean["fits"]
        assert lean["short_bytes"] == min(r["short_bytes"] for r in fit_doc["fit_rows"]
                                          if r["gpu"] == one and r["optimizer"] == opt)


def test_a_model_without_default_targets_gets_no_lora_rungs_unless_given():
    doc = plan("tiny-vit", precisions=["fp32"], gpus=["custom:4MiB"], fit=True, **KW).to_dict()
    assert {r["recipe"] for r in doc["fit_rows"]} == set(LADDER[:3])
    assert "no LoRA rungs" in doc["assumptions"]["fit_rows"]
    given = plan("tiny-vit", precisions=["fp32"], gpus=["custom:4MiB"], fit=True, lora="r=4,targets=query,value",
                 **KW).to_dict()
    assert {"LoRA r=4 bf16", "QLoRA r=4 nf4"} <= {r["recipe"] for r in given["fit_rows"]}


def test_cli_fit(cli, tmp_path):
    out = tmp_path / "p.json"
    res = cli("plan", "--model", "tiny-llama", "--seq-len", "16", "-p", "fp32", "-g", "custom:3MiB", "--context",
              "1MiB", "--fit", "--json", out)
    assert res.exit_code == 0, res.output
    assert "what fits: tiny-llama" in res.stdout
    assert "custom:3MiB, sgdsai: fits from 'full fp32'" in res.stdout
    assert "custom:3MiB, adamw: fits from 'full bf16'" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["spec"]["fit"] is True and len(doc["fit_rows"]) == len(LADDER) * 2
