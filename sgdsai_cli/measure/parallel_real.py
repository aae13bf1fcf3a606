"""A real FSDP2 or DDP training run on every rank of a torchrun job, gathered into one document on rank 0.

    torchrun --nproc-per-node 2 -m sgdsai_cli profile --model tiny-llama --parallel fsdp2 --device cpu
    torchrun --nproc-per-node 2 -m sgdsai_cli profile --model tiny-llama --parallel ddp --device cpu

Each rank joins the job's process group (gloo on the CPU, NCCL on CUDA; a timeout on every collective,
so a rank that fails cannot hang the others for ever), builds the model, applies ``fully_shard`` to
each decoder block and the root as the simulation does (``measure.parallel``), or wraps it in
``DistributedDataParallel`` with the same bucket size and ``gradient_as_bucket_view`` as the DDP
simulation (``measure.parallel_ddp``; here with DDP's built-in all-reduce), and trains with each
optimizer: ``warmup`` steps, then ``steps`` timed steps. The optimizer takes the path a CUDA run
takes (``use_cuda_default_path``), as in the simulation, so CPU figures compare with it.

Memory per rank: its shards of parameters, gradients and state (bytes of the local storages), DDP's
gradient buckets (their sizes after the rebuild before the second forward), and the peak of a steady step above
those: on the CPU the live-storage tracker with FSDP2's resized unsharded storages watched (the
simulation's tracker, on real tensors); on CUDA the caching allocator's peak. Rank 0 gathers every
rank's rows (``gather_object``) and returns the document; the other ranks return None.
"""

from __future__ import annotations

import gc
import os
import time
from datetime import timedelta

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, error_text
from sgdsai_cli.measure import parallel as par
from sgdsai_cli.measure.sizing import meta_model, model_info
from sgdsai_cli.measure.stats import latency_summary, percentile
from sgdsai_cli.measure.stepping import use_cuda_default_path
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.results import Environment, MemoryResult, ProfileResult, ProfileSpec, RunResult

COLLECTIVE_TIMEOUT_S = 300


def launched_rank() -> int | None:
    """This process's rank when started by torchrun (RANK and WORLD_SIZE set), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        try:
            return int(os.environ["RANK"])
        except ValueError:
            return None
    return None


def launch_torchrun(profile_args: list[str], nproc: int) -> int:
    """Run ``sgdsai profile PROFILE_ARGS`` on ``nproc`` local ranks through torchrun (127.0.0.1, a free
    port); return its exit status."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--nnodes", "1",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "sgdsai_cli", "profile", *profile_args]
    return subprocess.run(cmd, check=False).returncode


def _join(device: torch.device):
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return True


def _steady_peak(model, opt, spec, model_spec, batch, device, watched) -> int:
    """Peak bytes of one steady step above parameters and state (gradients None at its start)."""
    from sgdsai_cli import models

    opt.zero_grad(set_to_none=True)
    gc.collect()  # garbage in reference cycles from earlier steps would otherwise die at a random point
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        models.training_loss(model_spec, model, batch).backward()
        opt.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    tracker = par._FSDPTracker(watched)
    with tracker:
        fresh = tuple(t.clone() for t in batch)  # the batch counts, as in the simulation
        models.training_loss(model_spec, model, fresh).backward()
        del fresh
        opt.step()
    return tracker.peak


def _one(name: str, spec: ProfileSpec, model_spec, cfg: par.ParallelConfig, device: torch.device) -> dict:
    from torch.distributed.fsdp import fully_shard

    from sgdsai_cli import models
    from sgdsai_cli.optim.registry import build_optimizer

    precision = resolve_precision(spec.precision)
    torch.manual_seed(spec.seed)
    model = models.build_model(model_spec, device=str(device), dtype=precision.param_dtype)
    if cfg.kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        inner = model
        model = DistributedDataParallel(model, bucket_cap_mb=cfg.bucket_cap_mb,
                                        gradient_as_bucket_view=cfg.gradient_as_bucket_view)
        watched = []
    else:
        mesh = par._mesh(cfg, device.type)
        blocks = models.decoder_layers(model)
        for block in blocks:
            fully_shard(block, mesh=mesh, reshard_after_forward=cfg.reshard_after_forward)
        fully_shard(model, mesh=mesh, reshard_after_forward=cfg.reshard_after_forward)
        watched, _ = par._unsharded_storages(model, blocks, None)
        inner = model
    opt, _ = build_optimizer(name, inner.parameters())
    impl = use_cuda_default_path(opt)
    batch = models.make_batch(model_spec, spec.batch_size, spec.seq_len, device=str(device))
    # the first step creates the state; DDP rebuilds its buckets before the second forward
    for _ in range(max(spec.warmup, 2 if cfg.kind == "ddp" else 1)):
        opt.zero_grad(set_to_none=True)
        models.training_loss(model_spec, model, batch).backward()
        opt.step()
    bucket_bytes = None
    if cfg.kind == "ddp":  # the reducer's buckets after their rebuild, by the sizes of zero copies of them
        bucket_bytes = sum(b.buffer().untyped_storage().nbytes() for b in model.reducer._get_zeros_like_grad_buckets())
    row = {"optimizer": name, "impl": impl, "param_bytes": par.local_bytes(model.parameters()),
           "grad_bytes": par.local_bytes(p.grad for p in model.parameters() if p.grad is not None),
           "state_bytes_by_key": par.local_state_by_key(opt), "bucket_bytes": bucket_bytes}
    row["steady_peak_bytes"] = _steady_peak(model, opt, spec, model_spec, batch, device, watched)
    times = []
    for _ in range(spec.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        models.training_loss(model_spec, model, batch).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    row["step_ms"] = times
    return row


def run_ranks(spec: ProfileSpec, model_spec, optimizers: list[str], cfg: par.ParallelConfig) -> ProfileResult | None:
    """Train on this rank with each optimizer; rank 0 returns the gathered document, the others None."""
    import torch.distributed as dist

    device = torch.device(spec.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EnvironmentUnavailable("--device cuda: no CUDA device here")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
    world = int(os.environ["WORLD_SIZE"])
    if cfg.world_size not in (1, world):
        raise BadInput(f"--world-size {cfg.world_size} differs from torchrun's WORLD_SIZE {world}",
                       field="world_size", value=cfg.world_size)
    ddp = cfg.kind == "ddp"
    cfg = par.check_parallel(cfg.kind, world, cfg.shard_size, cfg.reshard_after_forward,
                             cfg.bucket_cap_mb if ddp else None, cfg.gradient_as_bucket_view if ddp else None)
    joined = _join(device)
    try:
        rank = dist.get_rank()
        rows = []
        for name in optimizers:
            try:
                rows.append(_one(name, spec, model_spec, cfg, device))
            except torch.OutOfMemoryError as e:
                rows.append({"optimizer": name, "status": "oom", "error": error_text(e)})
            except Exception as e:  # this rank's failure is its row; the others carry on to the gather
                rows.append({"optimizer": name, "status": "error", "error": error_text(e)})
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(rows, gathered, dst=0)
        gc.collect()  # the runs' models and their pending collective work, before the group goes
        dist.barrier()
    finally:
        if joined:
            dist.destroy_process_group()
    if rank != 0:
        return None
    return _document(spec, model_spec, optimizers, cfg, gathered)


def _document(spec, model_spec, optimizers, cfg, gathered) -> ProfileResult:
    info = model_info(meta_model(model_spec, resolve_precision(spec.precision)), model_spec)
    runs = []
    p50s = {}
    for name_index, name in enumerate(optimizers):
        for rank, rows in enumerate(gathered):
            r = rows[name_index]
            extra = {"rank": rank, "world_size": cfg.world_size, "parallel": cfg.kind}
            if r.get("status") in ("oom", "error"):
                runs.append(RunResult(optimizer=name, impl=None, status=r["status"], error=r["error"], extra=extra))
                continue
            by_key = r["state_bytes_by_key"]
            state = sum(by_key.values())
            buckets = r.get("bucket_bytes")
            details = {"steady_step_peak_bytes": r["steady_peak_bytes"],
                       **({"ddp_bucket_bytes": buckets} if buckets is not None else {})}
            memory = MemoryResult(source="measured", state_bytes=state, state_bytes_by_key=by_key,
                                  param_bytes=r["param_bytes"], grad_bytes=r["grad_bytes"],
                                  peak_allocated_bytes=r["param_bytes"] + (buckets or 0) + state
                                  + r["steady_peak_bytes"], details=details)
            latency = {"step": latency_summary(r["step_ms"])} if r["step_ms"] else None
            if r["step_ms"]:
                p50s.setdefault(name, []).append(percentile(r["step_ms"], 50))
            runs.append(RunResult(optimizer=name, impl=r["impl"], status="ok", memory=memory, latency_ms=latency,
                                  extra=extra))
    straggler = {name: (max(v) - min(v)) / min(v) if min(v) > 0 else None for name, v in p50s.items()}
    device = {"type": torch.device(spec.device).type, "name": spec.device}
    return ProfileResult(spec, info, runs, Environment.current(device),
                         extra={"parallel": {**cfg.to_dict(), "ranks": cfg.world_size,
                                             "straggler_spread": straggler}})
