"""One rank of the gloo tests in test_distributed.py (run as a script, torchrun-style environment).

``python tests/dist_worker.py SCENARIO OUT_DIR [CKPT_DIR]`` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set. Every rank trains the same tiny model under FSDP2, HSDP and DDP, and rank 0 writes
``OUT_DIR/result.json``: per setup, the largest relative error of the full parameters and of the g-SNR
against a one-process SGDSaI run from the same initialisation and data, and the collectives the optimizer
step issued (torch's CommDebugMode) at the first, second and a steady step.

The model has every degenerate case: ``lora_b`` starts at zero, so ``lora_a``'s first gradient is all
zero; ``shift`` has a constant gradient; ``scale`` has one element; ``row`` has one row, so every rank
but rank 0 holds an empty shard.

Scenarios: ``main`` (any world size: fsdp2, plus hsdp at 4 ranks, ddp, and a DCP save at step 10 into
CKPT_DIR with a resume at the same world size) and ``resume`` (load CKPT_DIR, saved at another world
size, and continue to step 20).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.debug import CommDebugMode
from torch.nn.parallel import DistributedDataParallel

from sgdsai_cli.optim import SGDSaI
from sgdsai_cli.optim import sgdsai as sgdsai_module

STEPS, SAVE_AT, BATCH = 20, 10, 8


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(8, 16)
        self.l2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)
        self.lora_a = nn.Parameter(torch.randn(4, 16) * 0.1)
        self.lora_b = nn.Parameter(torch.zeros(16, 4))
        self.scale = nn.Parameter(torch.ones(1))
        self.row = nn.Parameter(torch.randn(1, 16))
        self.shift = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        h = torch.relu(self.l1(x))
        h = h + h @ self.lora_a.T @ self.lora_b.T
        h = torch.relu(self.l2(h)) * self.scale + self.row
        return self.head(h), self.shift.sum()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 8, generator=gen), torch.randn(BATCH, 3, generator=gen)


def loss_of(model, x, y):
    out, extra = model(x)
    return nn.functional.mse_loss(out, y) + extra


def fresh(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def reference(steps: int) -> tuple[dict, dict]:
    """One process, the whole batch: full parameters and g-SNR by name after ``steps`` steps."""
    model = fresh()
    opt = SGDSaI(model.parameters(), lr=1e-2)
    for step in range(steps):
        opt.zero_grad()
        loss_of(model, *batch(step)).backward()
        opt.step()
    names = dict(model.named_parameters())
    return ({n: p.detach().clone() for n, p in names.items()},
            {n: float(opt.state[p]["gsnr"]) for n, p in names.items()})


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def train(model, opt, steps: range, dp_rank: int, dp_size: int, counts: list | None = None,
          groups: list | None = None, host_reads: list | None = None) -> None:
    """Train over ``steps``; ``counts`` gets the optimizer's collectives per step (CommDebugMode),
    ``groups`` the size of the process group of each statistics gather and ``host_reads`` the
    device-to-host reads (``optim.host.to_host`` calls) per step."""
    per = BATCH // dp_size
    gather = dist.all_gather_single

    def spy(out, inp, group=None, **kw):
        if groups is not None:
            groups.append(dist.get_world_size(group))
        return gather(out, inp, group=group, **kw)

    for step in steps:
        x, y = batch(step)
        opt.zero_grad()
        loss_of(model, x[dp_rank * per:(dp_rank + 1) * per], y[dp_rank * per:(dp_rank + 1) * per]).backward()
        reads = []
        real_to_host = sgdsai_module.to_host

        def host_spy(values, reads=reads, real=real_to_host):
            reads.append(len(values))
            return real(values)

        dist.all_gather_single, sgdsai_module.to_host = spy, host_spy
        try:
            with CommDebugMode() as comm:
                opt.step()
        finally:
            dist.all_gather_single, sgdsai_module.to_host = gather, real_to_host
        if counts is not None:
            counts.append(comm.get_total_counts())
        if host_reads is not None:
            host_reads.append(len(reads))


def errors(model, opt, ref: tuple[dict, dict]) -> dict:
    params, gsnrs = ref
    module = model.module if isinstance(model, DistributedDataParallel) else model
    param_rel = gsnr_rel = 0.0
    for name, p in module.named_parameters():
        got, want = full(p.detach()), params[name]
        param_rel = max(param_rel, float((got - want).norm() / want.norm().clamp_min(1e-30)))
        g = float(opt.state[p]["gsnr"])
        gsnr_rel = max(gsnr_rel, abs(g - gsnrs[name]) / abs(gsnrs[name]))
    return {"param_rel": param_rel, "gsnr_rel": gsnr_rel}


def sharded(mesh) -> Tiny:
    model = fresh()
    for layer in (model.l1, model.l2):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def state_dicts(model, opt) -> dict:
    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}


def load(model, opt, path: str) -> None:
    sd = state_dicts(model, opt)
    dcp.load(sd, checkpoint_id=path)
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, opt, sd["optim"])


def shard_info(model) -> dict:
    """Local element count of each parameter on this rank (to show the empty shards)."""
    return {n: p.to_local().numel() for n, p in model.named_parameters()}


def main(scenario: str, out_dir: str, ckpt: str) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    ref = reference(STEPS)
    result: dict = {"world_size": world}
    mesh = init_device_mesh("cpu", (world,))
    if scenario == "resume":
        model = sharded(mesh)
        opt = SGDSaI(model.parameters(), lr=1e-2)
        load(model, opt, ckpt)
        train(model, opt, range(SAVE_AT, STEPS), rank, world)
        result["resume"] = errors(model, opt, ref)
        return result
    # FSDP2 over all ranks, with a DCP save at step 10 and a resume at the same world size.
    model = sharded(mesh)
    opt = SGDSaI(model.parameters(), lr=1e-2)
    counts: list = []
    groups: list = []
    reads: list = []
    train(model, opt, range(SAVE_AT), rank, world, counts, groups, reads)
    dcp.save(state_dicts(model, opt), checkpoint_id=ckpt)
    train(model, opt, range(SAVE_AT, STEPS), rank, world, counts)
    result["fsdp2"] = {**errors(model, opt, ref), "collectives": counts[:3],
                       "host_reads": reads[:3], "group_sizes": groups, "local_numel": shard_info(model)}
    at_20 = {n: full(p.detach()) for n, p in model.named_parameters()}
    again = sharded(mesh)
    opt2 = SGDSaI(again.parameters(), lr=1e-2)
    load(again, opt2, ckpt)
    train(again, opt2, range(SAVE_AT, STEPS), rank, world)
    result["resume_same"] = {
        **errors(again, opt2, ref),
        "identical": all(torch.equal(full(p.detach()), at_20[n]) for n, p in again.named_parameters())}
    if world == 4:  # HSDP: 2 replicas of 2 shards; the statistics go over the shard dimension only
        mesh2 = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
        model = sharded(mesh2)
        opt = SGDSaI(model.parameters(), lr=1e-2)
        counts, groups = [], []
        train(model, opt, range(STEPS), rank, world, counts, groups)
        result["hsdp"] = {**errors(model, opt, ref), "collectives": counts[:3], "group_sizes": groups}
    model = DistributedDataParallel(fresh())
    opt = SGDSaI(model.parameters(), lr=1e-2)
    counts = []
    train(model, opt, range(STEPS), rank, world, counts)
    result["ddp"] = {**errors(model, opt, ref), "collectives": counts[:3]}
    result["bytes"] = measured_bytes(mesh)
    return result


def measured_bytes(mesh) -> dict:
    """This rank's bytes of tiny-llama under FSDP2 after one real step of each optimizer (vs the simulation)."""
    from sgdsai_cli import models
    from sgdsai_cli.measure.parallel import local_bytes, local_state_by_key
    from sgdsai_cli.optim.registry import build_optimizer

    spec = models.resolve_model("tiny-llama")
    out = {}
    for name in ("sgdsai", "adamw"):
        model = models.build_model(spec, device="cpu")
        for block in models.decoder_layers(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        models.training_loss(spec, model, models.make_batch(spec, 1, 32, device="cpu")).backward()
        opt, _ = build_optimizer(name, model.parameters())
        opt.step()
        out[name] = {"param_bytes": local_bytes(model.parameters()),
                     "grad_bytes": local_bytes(p.grad for p in model.parameters()),
                     "state_bytes_by_key": local_state_by_key(opt)}
    return out


if __name__ == "__main__":
    import traceback

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    code = 1
    try:
        res = main(sys.argv[1], sys.argv[2], sys.argv[3])
        if dist.get_rank() == 0:
            with open(os.path.join(sys.argv[2], "result.json"), "w") as f:
                json.dump(res, f)
        # every rank's shard sizes (rank 0's alone would hide the empty shards)
        with open(os.path.join(sys.argv[2], f"rank{dist.get_rank()}.json"), "w") as f:
            json.dump(res.get("fsdp2", {}).get("local_numel", {}), f)
        dist.barrier()  # no rank tears its group down while another still talks to it
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            dist.destroy_process_group()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # skip interpreter teardown: gloo's and DCP's threads can abort it ("terminate called without an
            # active exception") after all the work is done and written
            os._exit(code)
