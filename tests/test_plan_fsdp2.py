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
                       batch_size=1, seq_len=64, context_bytes=0, max_world_size=1, max_batch=1)
    assert row["gpus_needed"] == 1
    return row["rank_peak_bytes"]


def test_a_card_too_small_for_one_rank_gets_more_ranks(one_rank_peak):
    card = GPU("card", "card", one_rank_peak - 1, 0)
    [row] = fsdp2_rows(resolve_model("tiny-llama"), ["bf16"], [card], ["sgdsai"], batch_size=1, seq_len=64,
                       context_bytes=0, max_world_size=4, max_batch=1)
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
    got = cli("plan", "--model", "tiny-llama", "--precision", "bf16", "--gpu", "custom:8MiB", "--context", "1KiB",
              "--optimizer", "sgdsai", "--seq-len", "64", "--parallel", "fsdp2", "--format", "json")
    assert got.exit_code == 0, got.output
    import json

    doc = json.loads(got.output)
    assert doc["spec"]["parallel"] == "fsdp2"
    [row] = doc["fsdp2_rows"]
    assert row["gpus_needed"] == 1 and row["rank_peak_bytes"] > 0 and row["max_batch_per_rank"] > 1


def test_bad_parallel_mode_is_refused():
    with pytest.raises(BadInput, match="bad parallel 'ddp'") as info:
        plan("tiny-llama", parallel="ddp")
    assert info.value.field == "parallel"


def test_max_batch_per_rank_is_the_largest_the_simulation_fits(one_rank_peak):
    """At the world size found, the full simulation at max_batch_per_rank fits the card, one more does not."""
    from sgdsai_cli import profile

    card = GPU("card", "card", one_rank_peak * 3, 0)
    [row] = fsdp2_rows(resolve_model("tiny-llama"), ["bf16"], [card], ["sgdsai"], batch_size=1, seq_len=64,
                       context_bytes=0, max_world_size=2)
    best = row["max_batch_per_rank"]
    assert row["gpus_needed"] == 1 and best > 1

    def peak(batch: int) -> int:
        return profile(model="tiny-llama", parallel="fsdp2", world_size=1, device="meta", precision="bf16",
                       seq_len=64, batch_size=batch, optimizers=["sgdsai"]).runs[0].memory.estimated_peak_bytes

    assert peak(best) <= card.memory_bytes < peak(best + 1)


@pytest.mark.parametrize("room", [0, 5, 99, 100, 101, 1000, 12345])
@pytest.mark.parametrize("shape", ["affine", "gradients then activations", "steps"])
def test_largest_batch_search(room, shape):
    from sgdsai_cli.analysis.plan_fsdp2 import largest_batch

    fn = {"affine": lambda b: 10 + 7 * b, "gradients then activations": lambda b: max(60 + b, 3 * b * b),
          "steps": lambda b: 50 * (b // 3) + b}[shape]
    want = max((b for b in range(0, 5000) if b == 0 or fn(b) <= room), default=0)
    assert largest_batch(fn, room, limit=4999) == want


def test_a_prepared_model_traces_any_batch_as_a_fresh_one():
    """The batch search re-traces one prepared sharded model: each trace equals a fresh model's, in any order."""
    from sgdsai_cli.measure import estimate as est
    from sgdsai_cli.measure import parallel as par
    from sgdsai_cli.precision import resolve_precision

    spec = est.with_depth(resolve_model("tiny-llama"), 4)
    precision = resolve_precision("fp32")
    cfg = par.check_parallel("fsdp2", 4, None, True)

    def peak(fb) -> tuple[int, int]:
        return est._extend(fb.segments, 3, 4)

    with par.fake_process_group(4):
        prepared = par.prepare_trace(spec, precision, cfg, 3, 32)
        reused = [peak(par.trace_prepared(prepared, precision, cfg, b, 32)[0]) for b in (4, 2, 4)]
        fresh = {b: peak(par._trace_forward_backward(spec, precision, cfg, b, 32, 3)[0]) for b in (2, 4)}
    assert reused == [fresh[4], fresh[2], fresh[4]] and fresh[4] > fresh[2]
