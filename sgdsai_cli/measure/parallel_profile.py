"""A profile document of what one FSDP2 or DDP rank holds, from the one-process simulation
(``measure.parallel``, ``measure.parallel_ddp``).

Each optimizer's row is rank 0's: ``memory`` holds its sharded parameter, gradient and state bytes,
the forward/backward peak and the step peak (``estimated_peak_bytes``), and ``details`` the unsharded
parameters of the root and of one block, the all-gather and reduce-scatter buffers of one block; the
row carries ``rank``, ``world_size`` and ``parallel`` (additive to schema 1), and the document a
``parallel`` object with the layout and what was and was not counted. Under DDP ``details`` holds the
gradient buckets' bytes (``ddp_bucket_bytes``) and the gradients kept apart from them
(``separate_grad_bytes``: none with ``gradient_as_bucket_view``).
"""

from __future__ import annotations

import time

from sgdsai_cli.measure.parallel import ParallelConfig, fake_process_group, simulate_fsdp2
from sgdsai_cli.measure.sizing import meta_model, model_info
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.progress import Progress, ProgressCallback, report_to
from sgdsai_cli.results import META_DEVICE, Environment, MemoryResult, ProfileResult, ProfileSpec, RunResult

COUNTED = ("sharded parameters, gradients and optimizer state (FSDP2's padding included); the unsharded "
           "parameters of the root and of each block while gathered; all-gather output and reduce-scatter "
           "input/output buffers; activations and temporaries of forward, backward and the optimizer step")
NOT_COUNTED = ("the communication library's own memory (NCCL channel buffers and workspace), the CUDA "
               "context, the caching allocator's rounding and fragmentation, and buffers held past their "
               "last use by side-stream synchronisation on a GPU (the simulation runs on one stream)")
DDP_COUNTED = ("the full parameters; DDP's gradient buckets (every gradient once, as the reducer allocates "
               "them); the gradients apart from the buckets (none with gradient_as_bucket_view); optimizer "
               "state; activations and temporaries of forward (DDP's output clone included), backward and the "
               "optimizer step")
DDP_NOT_COUNTED = ("the communication library's own memory (NCCL or gloo scratch buffers), the CUDA context, "
                   "the caching allocator's rounding and fragmentation, DDP's start-up parameter broadcast "
                   "(init_sync) and its one-time bucket rebuild before the second forward")


def simulate_profile(spec: ProfileSpec, model_spec, optimizers: list[str], cfg: ParallelConfig, *,
                     on_progress: ProgressCallback | None = None) -> ProfileResult:
    """Rank 0's memory under FSDP2 or DDP for each optimizer, as a ProfileResult (no device, no printing).

    A fake process group lives only for the duration of the call (none may be initialised before).
    """
    say = report_to(on_progress)
    precision = resolve_precision(spec.precision)
    t0 = time.perf_counter()
    info = model_info(meta_model(model_spec, precision), model_spec)
    for name in optimizers:
        say(Progress(name, 0, 1, "simulating"))
    simulate = simulate_fsdp2
    if cfg.kind == "ddp":
        from sgdsai_cli.measure.parallel_ddp import simulate_ddp as simulate
    with fake_process_group(cfg.world_size):
        sim = simulate(model_spec, precision, optimizers, cfg, spec.batch_size, spec.seq_len)
    runs = [_row(r, cfg) if not isinstance(r, str) else
            RunResult(optimizer=name, impl=None, status="error", error=r,
                      extra={"rank": 0, "world_size": cfg.world_size, "parallel": cfg.kind})
            for name, r in zip(optimizers, sim.ranks, strict=True)]
    for run in runs:
        say(Progress(run.optimizer, 1, 1, run.status))
    layout = {**cfg.to_dict(), "rank": 0, "layers": sim.layers, "traced_layers": sim.traced_layers,
              "counted": DDP_COUNTED if cfg.kind == "ddp" else COUNTED,
              "not_counted": DDP_NOT_COUNTED if cfg.kind == "ddp" else NOT_COUNTED}
    return ProfileResult(spec, info, runs, Environment.current(dict(META_DEVICE)),
                         timing_s={"simulation": round(sim.seconds, 3), "total": round(time.perf_counter() - t0, 3)},
                         extra={"parallel": layout})


def _row(r, cfg: ParallelConfig) -> RunResult:
    memory = MemoryResult(
        source="fake", state_bytes=r.state_bytes, state_bytes_by_key=dict(r.state_bytes_by_key),
        param_bytes=r.param_bytes, grad_bytes=r.grad_bytes, step_transient_bytes=r.step_transient_bytes,
        estimated_peak_bytes=r.peak_bytes,
        details={"forward_backward_peak_bytes": r.forward_backward_peak_bytes, **r.details})
    hsdp = f", {cfg.replicas} replicas of {cfg.shards} shards" if cfg.replicas > 1 else ""
    note = (f"rank 0 of {cfg.world_size} (FSDP2{hsdp}, reshard after forward "
            f"{'on' if cfg.reshard_after_forward else 'off'}): sharded params, grads and state; peak simulated "
            "with fake tensors (NCCL's own buffers not counted)")
    if cfg.kind == "ddp":
        note = (f"rank 0 of {cfg.world_size} (DDP, {cfg.bucket_cap_mb:g} MiB buckets, gradient_as_bucket_view "
                f"{'on' if cfg.gradient_as_bucket_view else 'off'}): full params, grads and state plus the "
                "gradient buckets; peak simulated with fake tensors (NCCL's own buffers not counted)")
    return RunResult(optimizer=r.optimizer, impl=r.impl, status="ok", memory=memory, note=note,
                     extra={"rank": 0, "world_size": cfg.world_size, "parallel": cfg.kind})

