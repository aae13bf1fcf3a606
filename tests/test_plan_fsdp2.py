"""plan --parallel fsdp2: the fewest FSDP2 ranks from the per-rank simulation (gloo-free: torch's fake group)."""

from __future__ import annotations

import pytest

from sgdsai_cli.analysis.gpus import GPU
from sgdsai_cli.analysis.plan import plan
from sgdsai_cli.analysis.plan_fsdp2 import fsdp2_rows
from sgdsai_cli.errors import BadInput
from sgdsai_cli.models import resolve_model


@pytest.fixture(scope="module")
def one_rank_peak() -> int:
    [row] = fsdp2_rows(resolve_model("tiny-llama"), ["bf16"], [GPU("big", "big", 2**40, 0)], ["sgdsai"],
                       batch_size=1, seq_len=64, context_bytes=0, max_world_size=1)
    assert row["gpus_needed"] == 1
    return row["rank_peak_bytes"]


def test_a_card_too_small_for_one_rank_gets_more_ranks(one_rank_peak):
    card = GPU("card", "card", one_rank_peak - 1, 0)
    [row] = fsdp2_rows(resolve_model("tiny-llama"), ["bf16"], [card], ["sgdsai"], batch_size=1, seq_len=64,
                       context_bytes=0, max_world_size=4)
    assert row["gpus_needed"] in (2, 4)
    assert row["rank_peak_bytes"] <= card.memory_bytes < one_rank_peak
    assert row["rank_param_bytes"] * row["gpus_needed"] >= row["rank_param_bytes"]  # sharded: a part each
    assert row["reason"] is None


def test_no_world_size_fits_says_why(one_rank_peak):
    card = GPU("tiny", "tiny", 1000, 0)
    [row] = fsdp2_rows(resolve_model("tiny-llama"), ["bf16"], [card], ["sgdsai"], batch_size=1, seq_len=64,
                       context_bytes=0, max_world_size=2)
    assert row["gpus_needed"] is None and row["world_size_simulated"] == 2
    assert row["reason"].startswith("impractical: at 2 ranks one rank still needs")


def test_plan_document_holds_the_fsdp2_rows(cli):
    got = cli("plan", "--model", "tiny-llama", "--precision", "bf16", "--gpu", "custom:2GiB", "--optimizer",
              "sgdsai", "--seq-len", "64", "--parallel", "fsdp2", "--format", "json")
    assert got.exit_code == 0, got.output
    import json

    doc = json.loads(got.output)
    assert doc["spec"]["parallel"] == "fsdp2"
    [row] = doc["fsdp2_rows"]
    assert row["gpus_needed"] == 1 and row["rank_peak_bytes"] > 0


def test_bad_parallel_mode_is_refused():
    with pytest.raises(BadInput, match="bad parallel 'ddp'") as info:
        plan("tiny-llama", parallel="ddp")
    assert info.value.field == "parallel"
