"""What one FSDP2 rank holds, simulated in one process (measure.parallel): exact depth extension,
FSDP2's padded shards, the fake process group gone afterwards, the CLI and its bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch.distributed as dist

from sgdsai_cli import models
from sgdsai_cli.errors import EnvironmentUnavailable
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure import parallel as par
from sgdsai_cli.precision import resolve_precision


# (model, world size, shard size, reshard after forward): the depth-3 trace extended to 6 blocks
# equals the full 6-block trace to the byte.
@pytest.mark.parametrize(("name", "world", "shard", "reshard"), [
    ("tiny-llama", 4, None, True), ("tiny-llama", 4, None, False), ("tiny-llama", 4, 2, True),
    ("tiny-gpt2", 2, None, False)])
def test_depth_extension_equals_the_full_trace(name, world, shard, reshard):
    cfg = par.check_parallel("fsdp2", world, shard, reshard)
    spec = est.with_depth(models.resolve_model(name), 6)
    precision = resolve_precision("fp32")
    with par.fake_process_group(world):
        short, _, _ = par._trace_forward_backward(spec, precision, cfg, 2, 32, 3)
        full, _, _ = par._trace_forward_backward(spec, precision, cfg, 2, 32, 6)
    assert est._extend(short.segments, 3, 6) == est._extend(full.segments, 6, 6)


def _padded_shard_bytes(model_spec, world: int) -> int:
    """FSDP2 pads dim 0 of every tensor to a multiple of the world size: each rank stores ceil(d0/N) rows."""
    model = models.build_model(model_spec, device="meta")
    total = 0
    for p in model.parameters():
        rows = math.ceil(p.shape[0] / world) if p.dim() else 1
        total += rows * (p.numel() // max(p.shape[0], 1) if p.dim() else 1) * p.element_size()
    return total


@pytest.fixture(scope="module")
def tiny_fsdp2() -> dict:
    from sgdsai_cli import profile

    assert not dist.is_initialized()
    doc = profile(model="tiny-llama", parallel="fsdp2", world_size=4, device="meta", seq_len=32).to_dict()
    assert not dist.is_initialized()  # the fake process group lives only inside the call
    return doc


def test_rows_are_rank_zero_with_padded_shards(tiny_fsdp2):
    spec = models.resolve_model("tiny-llama")
    want = _padded_shard_bytes(spec, 4)
    for run in tiny_fsdp2["runs"]:
        assert (run["rank"], run["world_size"], run["parallel"]) == (0, 4, "fsdp2")
        assert run["status"] == "ok"
        m = run["memory"]
        assert m["param_bytes"] == m["grad_bytes"] == want
        assert m["estimated_peak_bytes"] == m["param_bytes"] + m["state_bytes"] + max(
            m["details"]["forward_backward_peak_bytes"], m["grad_bytes"] + m["step_transient_bytes"])
    assert tiny_fsdp2["parallel"]["world_size"] == 4 and "NCCL" in tiny_fsdp2["parallel"]["not_counted"]


def test_state_per_key_follows_the_shards(tiny_fsdp2):
    runs = {r["optimizer"]: r["memory"] for r in tiny_fsdp2["runs"]}
    assert runs["sgdsai"]["state_bytes_by_key"]["momentum_buffer"] <= runs["sgdsai"]["param_bytes"]
    assert runs["adamw"]["state_bytes_by_key"]["exp_avg"] == runs["adamw"]["state_bytes_by_key"]["exp_avg_sq"]
    assert runs["adamw"]["state_bytes"] > runs["sgdsai"]["state_bytes"]


def test_more_ranks_hold_less():
    from sgdsai_cli import profile

    peaks = [profile(model="tiny-llama", parallel="fsdp2", world_size=n, device="meta", seq_len=32,
                     optimizers=["sgdsai"]).runs[0].memory.param_bytes for n in (1, 2, 4)]
    assert peaks[0] > peaks[1] > peaks[2]


def test_refuses_when_a_process_group_exists():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(EnvironmentUnavailable, match="already initialised"):
            with par.fake_process_group(2):
                pass
    finally:
        dist.destroy_process_group()


def test_cli_prints_per_rank_json(cli):
    res = cli("profile", "--model", "tiny-llama", "--parallel", "fsdp2", "--world-size", "4", "--shard-size", "2",
              "--no-reshard-after-forward", "--seq-len", "32", "-o", "sgdsai", "--format", "json", "-q")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["parallel"]["replicas"] == 2 and doc["parallel"]["reshard_after_forward"] is False
    assert doc["runs"][0]["world_size"] == 4


@pytest.mark.parametrize(("args", "field"), [
    (["--parallel", "zero3"], "parallel"),
    (["--parallel", "fsdp2", "--world-size", "4", "--shard-size", "3"], "shard_size"),
    (["--parallel", "fsdp2", "--world-size", "0"], "--world-size"),
    (["--parallel", "fsdp2", "--world-size", "2", "--device", "cpu"], "device"),
    (["--world-size", "2"], "world_size"),
])
def test_bad_parallel_inputs_exit_2(cli, args, field):
    res = cli("profile", "--model", "tiny-llama", *args)
    assert res.exit_code == 2
    assert field.strip("-").replace("-", "_") in res.stderr.replace("-", "_")
