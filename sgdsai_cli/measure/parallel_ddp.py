"""What one rank of a DDP job holds, simulated in one process: torch's real ``DistributedDataParallel``
over the fake process group, on fake tensors.

    with fake_process_group(8):
        sim = simulate_ddp(model_spec, precision, ["sgdsai", "adamw"], check_parallel("ddp", 8, None, True), 1, 512)

The model is built under ``FakeTensorMode`` and wrapped in the real ``DistributedDataParallel``
(``bucket_cap_mb``, ``gradient_as_bucket_view`` as asked); its C++ ``Reducer`` allocates the gradient
buckets (fake tensors: the tracker sees them), registers its autograd hooks, copies each gradient
into its bucket as it becomes ready, launches each bucket's all-reduce when the bucket is full and,
at the end of backward, copies the reduced buckets back into the gradients (or, with
``gradient_as_bucket_view``, makes every ``.grad`` a view into its bucket). One untraced step runs
first and the buckets are then rebuilt in gradient-ready order, as DDP does before the second forward;
the traced step is a steady one.

Three things differ from a job on real ranks, each because the fake process group has no data:

- ``init_sync=False``: DDP's start-up check of parameter shapes across ranks and its broadcast of rank
  0's parameters read tensor data (C++ ``_verify_params_across_processes``). Both run once, before
  training; the broadcast's 250 MiB staging buckets are not part of a training step.
- a DDP communication hook (``register_comm_hook``) in place of the built-in all-reduce: the fake
  group's ``Work`` completes with no value, and the reducer's built-in path asserts on that
  (``comm.cpp``: "expected the hook result is either a Tensor"). The hook does what torch's
  ``default_hooks.allreduce_hook`` does (divide the bucket in place, ``all_reduce`` it in place) and
  completes with the bucket itself. Both paths reduce the bucket in place: no tensor is allocated.
- the bucket rebuild's two host-side index tensors (C++ ``sync_bucket_indices`` fills an int32
  tensor element by element and broadcasts it) are real tensors: ``_HostIndices`` runs ops that see
  no fake tensor for real, during that one call only. The new buckets are fake, as all others.

What is counted: the full parameters, the buckets (every gradient once, in the parameters' dtype),
the gradients where they are separate from the buckets (``gradient_as_bucket_view`` off: a second
copy of every gradient, alive from backward until ``zero_grad``), optimizer state and its step
transient, activations and temporaries (DDP's output clone included), and the step peak. Not
counted: the communication library's own memory (NCCL or gloo scratch buffers), the CUDA context,
the caching allocator's rounding, and the one-time rebuild at the second forward (old and new buckets
may both be alive for a moment there).

Depth: forward and backward are traced at ``estimate.TRACE_DEPTH`` blocks and extended as the fake
estimate extends them (the reducer's work per block repeats: in-place copies and reductions); the
buckets are measured on the full-depth model, and the optimizer steps run over its full parameters.
"""

from __future__ import annotations

import gc
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from sgdsai_cli.errors import EnvironmentUnavailable
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure import parallel as par
from sgdsai_cli.measure.marked_step import marked_step
from sgdsai_cli.measure.tracker import LiveTracker
from sgdsai_cli.precision import Precision


class _HostIndices(TorchDispatchMode):
    """Ops that see no fake tensor run for real (above FakeTensorMode): int tensors made from nothing,
    and ops on real tensors only. Active only around the reducer's bucket rebuild."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._subclasses.fake_tensor import FakeTensor

        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        factory_int = not tensors and kwargs.get("dtype") in (torch.int32, torch.int64)
        if factory_int or (tensors and not any(isinstance(t, FakeTensor) for t in tensors)):
            with _disable_current_modes():
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _allreduce_hook(state, bucket):
    """torch's default all-reduce hook (divide in place, all-reduce in place), completing with the bucket."""
    import torch.distributed as dist

    buf = bucket.buffer()
    buf.div_(dist.get_world_size())
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda _: buf)


def _wrap(model, cfg: par.ParallelConfig, fake_mode) -> tuple[object, set[int], int]:
    """(DDP(model), the keys of the bucket storages, their bytes): the reducer's buckets as it allocates them."""
    from torch.nn.parallel import DistributedDataParallel

    tracker = LiveTracker()
    with fake_mode, tracker:
        ddp = DistributedDataParallel(model, bucket_cap_mb=cfg.bucket_cap_mb,
                                      gradient_as_bucket_view=cfg.gradient_as_bucket_view, init_sync=False)
    ddp.register_comm_hook(None, _allreduce_hook)
    return ddp, set(tracker._refs), tracker.live


def _rebuild(ddp, fake_mode) -> tuple[set[int], int]:
    """DDP's one bucket rebuild (after the first backward, as its forward would do it): the new buckets."""
    tracker = LiveTracker()
    with fake_mode, tracker, _HostIndices():
        ddp.reducer._rebuild_buckets()
    return set(tracker._refs), tracker.live


def _trace(model_spec, precision: Precision, cfg: par.ParallelConfig, batch_size: int, seq_len: int,
           depth: int) -> dict:
    """A steady forward and backward of the DDP model at ``depth`` blocks under the segment tracker."""
    from sgdsai_cli import models

    spec = est.with_depth(model_spec, depth) if depth != est.model_depth(model_spec) else model_spec
    fake_mode = est._fake_mode()
    model = est._build_fake(spec, precision.param_dtype, fake_mode)
    ddp, _, _ = _wrap(model, cfg, fake_mode)
    with fake_mode:  # the first step: DDP records the order in which gradients become ready
        with est._autocast(precision):
            loss = models.training_loss(spec, ddp, models.make_batch(spec, batch_size, seq_len, device="cpu",
                                                                     model=model))
        loss.backward()
        del loss
        for p in model.parameters():
            p.grad = None
    buckets, bucket_bytes = _rebuild(ddp, fake_mode)
    gc.collect()
    blocks = models.decoder_layers(model)
    tracker = est._SegmentTracker()
    marked_step(tracker, fake_mode, blocks, spec, precision, ddp, model, batch_size, seq_len)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    in_buckets = sum(1 for g in grads if g.untyped_storage()._cdata in buckets)
    return {"segments": tracker.close(), "ops": tracker.ops, "bucket_bytes": bucket_bytes,
            "buckets": len(buckets), "grads": len(grads), "grads_in_buckets": in_buckets,
            "separate_grad_bytes": par.local_bytes(g for g in grads if g.untyped_storage()._cdata not in buckets)}


def simulate_ddp(model_spec, precision: Precision, optimizers: list[str], cfg: par.ParallelConfig,
                 batch_size: int, seq_len: int) -> par.ParallelSimulation:
    """Rank 0's memory under DDP for each optimizer; needs ``fake_process_group(cfg.world_size)``."""
    from sgdsai_cli.errors import error_text

    t0 = time.perf_counter()
    layers = est.model_depth(model_spec)
    depth = min(layers, est.TRACE_DEPTH)
    traced = _trace(model_spec, precision, cfg, batch_size, seq_len, depth)
    fb_peak, _ = est._extend(traced["segments"], depth, layers)
    fake_mode = est._fake_mode()
    model = est._build_fake(model_spec, precision.param_dtype, fake_mode)
    _, _, bucket_bytes = _wrap(model, cfg, fake_mode)  # the full model's buckets (rebuilt later: the same bytes)
    params = par.local_bytes(model.parameters())
    buffers = par.local_bytes(model.buffers())
    # the gradients DDP leaves outside its buckets after backward: none with gradient_as_bucket_view
    separate = params if traced["separate_grad_bytes"] else 0
    ranks: list = []
    for name in optimizers:
        try:
            step = par._trace_steps(name, model, fake_mode)
        except EnvironmentUnavailable as e:
            ranks.append(str(e))
            continue
        except Exception as e:  # an optimizer that cannot step on these parameters
            ranks.append(error_text(e))
            continue
        state = sum(step.state_bytes_by_key.values())
        transient = max(step.first_peak, state + step.steady_peak) - state
        peak = params + buffers + bucket_bytes + state + max(fb_peak, separate + transient)
        ranks.append(par.RankEstimate(
            optimizer=name, impl=step.impl, param_bytes=params, grad_bytes=params, state_bytes=state,
            state_bytes_by_key=step.state_bytes_by_key, forward_backward_peak_bytes=fb_peak,
            step_transient_bytes=transient, peak_bytes=peak,
            details={"ddp_bucket_bytes": bucket_bytes, "separate_grad_bytes": separate, "buffer_bytes": buffers,
                     "traced_buckets": traced["buckets"], "traced_bucket_bytes": traced["bucket_bytes"],
                     "traced_grads_in_buckets": traced["grads_in_buckets"], "traced_grads": traced["grads"],
                     "first_step_peak_bytes": step.first_peak, "steady_step_peak_bytes": step.steady_peak,
                     "scalar_reads": step.scalar_reads, "trace_ops": traced["ops"]}))
    return par.ParallelSimulation(cfg, ranks, time.perf_counter() - t0, layers, depth)
