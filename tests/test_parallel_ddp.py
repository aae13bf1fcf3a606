"""What one DDP rank holds, simulated in one process (measure.parallel_ddp): torch's real
DistributedDataParallel over the fake process group, on fake tensors. Its buckets, gradient_as_bucket_view,
the exact depth extension, the CLI and its bad inputs."""

from __future__ import annotations

import json

import pytest
import torch.distributed as dist

from sgdsai_cli import models
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure import parallel as par
from sgdsai_cli.measure import parallel_ddp as ddp
from sgdsai_cli.precision import resolve_precision


def _sim(gabv: bool, cap: float | None = None, world: int = 4) -> dict:
    from sgdsai_cli import profile

    assert not dist.is_initialized()
    doc = profile(model="tiny-llama", parallel="ddp", world_size=world, device="meta", seq_len=32,
                  gradient_as_bucket_view=gabv, bucket_cap_mb=cap).to_dict()
    assert not dist.is_initialized()  # the fake process group lives only inside the call
    return doc


@pytest.fixture(scope="module")
def sims() -> dict:
    return {gabv: _sim(gabv) for gabv in (False, True)}


@pytest.mark.parametrize("gabv", [False, True])
def test_every_rank_holds_the_whole_model_and_the_buckets(sims, gabv):
    full = est.param_bytes(models.resolve_model("tiny-llama"), resolve_precision("fp32"))
    doc = sims[gabv]
    assert doc["parallel"]["kind"] == "ddp" and doc["parallel"]["gradient_as_bucket_view"] is gabv
    for run in doc["runs"]:
        assert (run["rank"], run["world_size"], run["parallel"], run["status"]) == (0, 4, "ddp", "ok")
        m = run["memory"]
        d = m["details"]
        assert m["param_bytes"] == m["grad_bytes"] == full
        assert d["ddp_bucket_bytes"] == full  # the reducer's buckets hold every gradient once
        # the gradients after backward: views into the buckets, or a second copy apart from them
        assert d["traced_grads_in_buckets"] == (d["traced_grads"] if gabv else 0)
        assert d["separate_grad_bytes"] == (0 if gabv else full)
        assert m["estimated_peak_bytes"] == m["param_bytes"] + d["ddp_bucket_bytes"] + m["state_bytes"] + max(
            d["forward_backward_peak_bytes"], d["separate_grad_bytes"] + m["step_transient_bytes"])


def test_gradient_as_bucket_view_lowers_the_peak(sims):
    off = {r["optimizer"]: r["memory"] for r in sims[False]["runs"]}
    on = {r["optimizer"]: r["memory"] for r in sims[True]["runs"]}
    for name in off:
        assert on[name]["estimated_peak_bytes"] < off[name]["estimated_peak_bytes"]
        assert on[name]["state_bytes_by_key"] == off[name]["state_bytes_by_key"]


def test_a_smaller_cap_makes_more_buckets_of_the_same_bytes(sims):
    small = _sim(False, cap=0.1)["runs"][0]["memory"]["details"]
    default = sims[False]["runs"][0]["memory"]["details"]
    assert default["traced_buckets"] == 1 and small["traced_buckets"] > 1  # tiny-llama: 617 KiB of gradients
    # the rebuilt buckets (gradient-ready order, bucket_cap_mb) hold the same bytes as the first ones
    assert small["traced_bucket_bytes"] == default["traced_bucket_bytes"] == default["ddp_bucket_bytes"]


def test_state_is_the_one_device_state(sims):
    from sgdsai_cli import profile

    one = {r.optimizer: r.memory for r in profile(model="tiny-llama", device="meta", seq_len=32).runs}
    for run in sims[False]["runs"]:
        assert run["memory"]["state_bytes_by_key"] == one[run["optimizer"]].state_bytes_by_key


@pytest.mark.parametrize(("name", "gabv"), [("tiny-llama", False), ("tiny-llama", True), ("tiny-gpt2", False)])
def test_depth_extension_equals_the_full_trace(name, gabv):
    cfg = par.check_parallel("ddp", 2, None, True, None, gabv)
    spec = est.with_depth(models.resolve_model(name), 6)
    precision = resolve_precision("fp32")
    with par.fake_process_group(2):
        short = ddp._trace(spec, precision, cfg, 2, 32, 3)
        full = ddp._trace(spec, precision, cfg, 2, 32, 6)
    assert est._extend(short["segments"], 3, 6) == est._extend(full["segments"], 6, 6)


def test_cli_prints_the_ddp_layout(cli):
    res = cli("profile", "--model", "tiny-llama", "--parallel", "ddp", "--world-size", "8", "--bucket-cap-mb", "0.5",
              "--gradient-as-bucket-view", "--seq-len", "32", "-o", "sgdsai", "--format", "json", "-q")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["parallel"]["bucket_cap_mb"] == 0.5 and doc["parallel"]["gradient_as_bucket_view"] is True
    assert "NCCL" in doc["parallel"]["not_counted"] and "bucket" in doc["parallel"]["counted"]
    assert doc["runs"][0]["world_size"] == 8


@pytest.mark.parametrize(("args", "field"), [
    (["--parallel", "ddp", "--world-size", "4", "--shard-size", "2"], "shard_size"),
    (["--parallel", "ddp", "--bucket-cap-mb", "0"], "--bucket-cap-mb"),
    (["--parallel", "fsdp2", "--world-size", "2", "--bucket-cap-mb", "10"], "bucket_cap_mb"),
    (["--gradient-as-bucket-view"], "gradient_as_bucket_view"),
])
def test_bad_ddp_inputs_exit_2(cli, args, field):
    res = cli("profile", "--model", "tiny-llama", *args)
    assert res.exit_code == 2, res.output
    assert field.strip("-").replace("-", "_") in res.stderr.replace("-", "_")
