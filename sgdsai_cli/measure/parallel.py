"""What one rank of an FSDP2 job holds, simulated in one process on fake tensors (no GPU, no peers).

    with fake_process_group(8):
        sim = simulate_fsdp2(model_spec, precision, ["sgdsai", "adamw"], ParallelConfig("fsdp2", 8), 1, 512)

Torch does the work, as torchtitan's memory estimation does: ``dist.init_process_group("fake")`` with
a ``FakeStore`` (every collective returns at once, rank 0 of ``world_size``), a device mesh over it
(HSDP: ``(replicate, shard)``), the model built under ``FakeTensorMode``, the real ``fully_shard``
applied to each decoder block and to the root, then one real forward, backward and two optimizer
steps. Everything FSDP2 allocates through torch ops is traced exactly by the live-storage tracker
(``measure.tracker``): all-gather output buffers, reduce-scatter inputs and outputs, sharded
gradients, activations, optimizer state and temporaries. FSDP2 keeps each unsharded parameter's
storage and resizes it (``storage.resize_``, no op to dispatch), so those storages are watched and
their size is read before and after every op.

What is *not* counted: the communication library's own memory (NCCL's channel buffers and work
space, gloo's), the CUDA context, the caching allocator's rounding and fragmentation, and buffers kept
alive by stream synchronisation (``record_stream``) on a real GPU: FSDP2 overlaps the next all-gather
and the previous reduce-scatter on side streams there, which the fake run, on one stream, frees in
program order.

Rank 0 is simulated: under ``Shard(0)`` it holds the largest piece of every tensor, and FSDP2 pads
every rank's parameter and gradient storage to the same size, so it is the busiest rank.

Depth: forward and backward are traced at ``TRACE_DEPTH`` blocks and the timeline extended with the
fake estimate's segments (``estimate._extend``: the middle block's forward and backward repeated);
the optimizer steps run over the sharded model at its full depth.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure.marked_step import marked_step
from sgdsai_cli.measure.stepping import SymbolicScalars, symbolic_step, use_cuda_default_path
from sgdsai_cli.measure.tracker import LiveTracker
from sgdsai_cli.precision import Precision

PARALLEL_KINDS = ("none", "fsdp2", "ddp")
DDP_BUCKET_CAP_MB = 25.0  # DistributedDataParallel's default bucket_cap_mb


@dataclass(frozen=True)
class ParallelConfig:
    """How the model is spread: FSDP2 over ``world_size`` ranks, sharded over ``shard_size`` of them
    (HSDP when smaller: ``world_size // shard_size`` replicas), parameters freed after forward or not;
    or DDP (every rank the whole model) with its gradient buckets' size and layout."""

    kind: str
    world_size: int
    shard_size: int | None = None  # None: shard over every rank (plain FSDP)
    reshard_after_forward: bool = True
    bucket_cap_mb: float = DDP_BUCKET_CAP_MB  # ddp: DistributedDataParallel(bucket_cap_mb=)
    gradient_as_bucket_view: bool = False  # ddp: gradients are views into the all-reduce buckets

    @property
    def shards(self) -> int:
        return self.shard_size or self.world_size

    @property
    def replicas(self) -> int:
        return self.world_size // self.shards

    def to_dict(self) -> dict:
        if self.kind == "ddp":
            return {"kind": self.kind, "world_size": self.world_size, "replicas": self.world_size,
                    "bucket_cap_mb": self.bucket_cap_mb, "gradient_as_bucket_view": self.gradient_as_bucket_view}
        return {"kind": self.kind, "world_size": self.world_size, "shard_size": self.shards,
                "replicas": self.replicas, "reshard_after_forward": self.reshard_after_forward}


def check_parallel(kind: str, world_size: int, shard_size: int | None, reshard_after_forward: bool,
                   bucket_cap_mb: float | None = None, gradient_as_bucket_view: bool | None = None) -> ParallelConfig:
    """A checked ``ParallelConfig`` (BadInput naming the field)."""
    if kind not in PARALLEL_KINDS:
        raise BadInput(f"unknown parallel mode {kind!r} (choose from {', '.join(PARALLEL_KINDS)})",
                       field="parallel", value=kind)
    for name, value in (("world_size", world_size), ("shard_size", shard_size)):
        if value is None and name == "shard_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInput(f"bad {name} {value!r} (must be a whole number, at least 1)", field=name, value=value)
    if shard_size is not None and world_size % shard_size:
        raise BadInput(f"bad shard_size {shard_size} (must divide world_size {world_size})",
                       field="shard_size", value=shard_size)
    if kind == "none" and (world_size != 1 or shard_size not in (None, 1)):
        raise BadInput("world_size and shard_size need --parallel fsdp2 or ddp", field="world_size", value=world_size)
    for name, value in (("bucket_cap_mb", bucket_cap_mb), ("gradient_as_bucket_view", gradient_as_bucket_view)):
        if kind != "ddp" and value is not None:
            raise BadInput(f"{name} needs --parallel ddp", field=name, value=value)
    if kind != "ddp":
        return ParallelConfig(kind, world_size, shard_size, bool(reshard_after_forward))
    if shard_size not in (None, world_size):
        raise BadInput(f"bad shard_size {shard_size} (DDP does not shard: every rank holds the whole model)",
                       field="shard_size", value=shard_size)
    cap = DDP_BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0 or cap == float("inf"):
        raise BadInput(f"bad bucket_cap_mb {cap!r} (must be a number of MiB greater than zero)",
                       field="bucket_cap_mb", value=cap)
    return ParallelConfig(kind, world_size, None, True, float(cap), bool(gradient_as_bucket_view))


@contextlib.contextmanager
def fake_process_group(world_size: int):
    """torch's fake process group (rank 0 of ``world_size``) for the duration; destroyed afterwards."""
    import torch.distributed as dist

    if not dist.is_available():
        raise EnvironmentUnavailable("this torch has no torch.distributed: cannot simulate FSDP2")
    if dist.is_initialized():
        raise EnvironmentUnavailable("a process group is already initialised in this process: the FSDP2 "
                                     "simulation needs its own (run it outside torchrun)")
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _local_storage(t):
    """The storage of ``t``, of its local shard for a DTensor (whose wrapper has a storage of the
    global size, which nothing allocates)."""
    from sgdsai_cli.measure.tracker import _storage
    from sgdsai_cli.optim.distributed import is_dtensor

    return _storage(t._local_tensor if is_dtensor(t) else t)


def _count(tracker: LiveTracker, func, args, kwargs):
    """``LiveTracker``'s dispatch with DTensors counted by their local shards."""
    from torch.utils._pytree import tree_leaves

    kwargs = kwargs or {}
    tracker.ops += 1
    out = func(*args, **kwargs)
    inputs = {st._cdata for st in map(_local_storage, tree_leaves((args, kwargs))) if st is not None}
    for st in map(_local_storage, tree_leaves(out)):
        if st is not None and st._cdata not in inputs:
            tracker.add(st)
    return out


class _LocalTracker(LiveTracker):
    """``LiveTracker`` counting DTensors by their local shards."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _count(self, func, args, kwargs)


class _FSDPTracker(est._SegmentTracker):
    """The estimate's segment tracker, plus storages that FSDP2 resizes in place (unsharded params)."""

    def __init__(self, watched: list[torch.UntypedStorage]) -> None:
        super().__init__()
        self._watched = watched
        self._resized = sum(st.nbytes() for st in watched)

    def poll(self) -> None:
        now = sum(st.nbytes() for st in self._watched)
        delta, self._resized = now - self._resized, now
        if delta > 0:
            self.live += delta
            self.peak = max(self.peak, self.live)
            self.allocated(delta)
        elif delta < 0:
            self.live += delta
            self.freed(-delta, self._seg.label)

    def mark(self, label: str) -> None:
        self.poll()
        super().mark(label)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.poll()
        out = _count(self, func, args, kwargs)
        self.poll()
        return out


def _local(t: torch.Tensor) -> torch.Tensor:
    from sgdsai_cli.optim.distributed import local

    return local(t)


def local_bytes(tensors) -> int:
    """Bytes of the distinct storages behind this rank's pieces of ``tensors`` (FSDP2's padding included)."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = _local(t).untyped_storage()
        seen.setdefault(st._cdata, st.nbytes())
    return sum(seen.values())


def local_state_by_key(opt: torch.optim.Optimizer) -> dict[str, int]:
    """This rank's optimizer state bytes per key (each storage once, first key wins)."""
    seen: set[int] = set()
    by_key: dict[str, int] = {}
    for state in opt.state.values():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            st = _local(value).untyped_storage()
            if st._cdata in seen:
                continue
            seen.add(st._cdata)
            by_key[str(key)] = by_key.get(str(key), 0) + st.nbytes()
    return by_key


def _mesh(cfg: ParallelConfig, device_type: str = "cpu"):
    from torch.distributed.device_mesh import init_device_mesh

    if cfg.replicas > 1:
        return init_device_mesh(device_type, (cfg.replicas, cfg.shards), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device_type, (cfg.world_size,))


def _sharded_model(model_spec, precision: Precision, cfg: ParallelConfig, depth: int):
    """(fake mode, model at ``depth`` blocks with fully_shard on each block and the root, blocks)."""
    from torch.distributed.fsdp import fully_shard

    from sgdsai_cli import models

    spec = est.with_depth(model_spec, depth) if depth != est.model_depth(model_spec) else model_spec
    fake_mode = est._fake_mode()
    model = est._build_fake(spec, precision.param_dtype, fake_mode)
    mesh = _mesh(cfg)
    blocks = models.decoder_layers(model)
    with fake_mode:
        for block in blocks:
            fully_shard(block, mesh=mesh, reshard_after_forward=cfg.reshard_after_forward)
        fully_shard(model, mesh=mesh, reshard_after_forward=cfg.reshard_after_forward)
    return spec, fake_mode, model, blocks


def _unsharded_storages(model, blocks, fake_mode) -> tuple[list[torch.UntypedStorage], dict[str, int]]:
    """The storages FSDP2 resizes for the unsharded parameters, and their full sizes (root, one block).

    Each module is unsharded once through the public ``unshard()`` / ``reshard()`` (FSDP2 allocates
    the unsharded tensors at the first unshard and later only resizes their storage)."""
    seen: dict[int, torch.UntypedStorage] = {}
    sizes = {}
    with fake_mode if fake_mode is not None else contextlib.nullcontext():
        for name, module in [("root", model), *[(f"block{i}", b) for i, b in enumerate(blocks)]]:
            module.unshard()
            own = [p for p in module.parameters()
                   if name != "root" or not any(p is q for b in blocks for q in b.parameters())]
            total = 0
            for p in own:
                st = p.untyped_storage()
                if st._cdata not in seen:
                    seen[st._cdata] = st
                    total += st.nbytes()
            sizes[name] = total
        for module in [model, *blocks]:
            module.reshard()
    return list(seen.values()), {"root": sizes["root"], "block": sizes.get("block1", sizes.get("block0", 0))}


@dataclass
class _ForwardBackward:
    segments: list
    depth: int
    ops: int
    grad_bytes: int
    unsharded: dict[str, int]
    group_padded_bytes: dict[str, int]


def _trace_forward_backward(model_spec, precision: Precision, cfg: ParallelConfig, batch_size: int,
                            seq_len: int, depth: int) -> tuple[_ForwardBackward, object, object]:
    """One forward and backward of the sharded model under the tracker, cut into the estimate's segments."""
    prepared = prepare_trace(model_spec, precision, cfg, depth, seq_len)
    return trace_prepared(prepared, precision, cfg, batch_size, seq_len)


def prepare_trace(model_spec, precision: Precision, cfg: ParallelConfig, depth: int, seq_len: int) -> tuple:
    """The sharded model at ``depth`` blocks after one untraced step, ready for ``trace_prepared`` at any
    batch (FSDP2 learns its backward prefetch order in the first step; the batch does not change it)."""
    from sgdsai_cli import models

    spec, fake_mode, model, blocks = _sharded_model(model_spec, precision, cfg, depth)
    watched, unsharded = _unsharded_storages(model, blocks, fake_mode)
    with fake_mode:
        models.training_loss(spec, model, models.make_batch(spec, 1, seq_len, device="cpu")).backward()
    return spec, fake_mode, model, blocks, watched, unsharded


def trace_prepared(prepared: tuple, precision: Precision, cfg: ParallelConfig, batch_size: int,
                   seq_len: int) -> tuple[_ForwardBackward, object, object]:
    """One traced steady forward and backward of a ``prepare_trace`` model (gradients None at its start)."""

    spec, fake_mode, model, blocks, watched, unsharded = prepared
    depth = len(blocks)
    for p in model.parameters():
        p.grad = None
    gc.collect()  # garbage of earlier steps in reference cycles would otherwise die at a random point of the trace
    tracker = _FSDPTracker(watched)
    marked_step(tracker, fake_mode, blocks, spec, precision, model, model, batch_size, seq_len)
    n = len(blocks)
    block = blocks[min(1, n - 1)]
    padded = {"root": cfg.shards * local_bytes(p for p in model.parameters()
                                               if not any(p is q for b in blocks for q in b.parameters())),
              "block": cfg.shards * local_bytes(block.parameters())}
    grads = local_bytes(p.grad for p in model.parameters() if p.grad is not None)
    fb = _ForwardBackward(tracker.close(), depth, tracker.ops, grads, unsharded, padded)
    return fb, fake_mode, model


@dataclass
class _Step:
    state_bytes_by_key: dict[str, int]
    first_peak: int
    steady_peak: int
    impl: str | None
    scalar_reads: int


def _trace_steps(optimizer: str, model, fake_mode) -> _Step:
    from sgdsai_cli.optim.registry import build_optimizer

    with fake_mode:
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        opt, _ = build_optimizer(optimizer, model.parameters())
        impl = use_cuda_default_path(opt)
        scalars = SymbolicScalars()
        first = _LocalTracker()
        with first:
            symbolic_step(opt, scalars)
        by_key = local_state_by_key(opt)
        steady = _LocalTracker()
        with steady:
            symbolic_step(opt, scalars)
    del opt
    return _Step(by_key, first.peak, steady.peak, impl, scalars.reads)


@dataclass
class RankEstimate:
    """What rank 0 holds during one steady training step of one optimizer (bytes)."""

    optimizer: str
    impl: str | None
    param_bytes: int  # this rank's shards (padded as FSDP2 stores them)
    grad_bytes: int
    state_bytes: int
    state_bytes_by_key: dict[str, int]
    forward_backward_peak_bytes: int  # above sharded params and state: unsharded params, buffers, grads, activations
    step_transient_bytes: int
    peak_bytes: int
    details: dict = field(default_factory=dict)


@dataclass
class ParallelSimulation:
    config: ParallelConfig
    ranks: list[RankEstimate | str]  # per optimizer, in order; a str says why it could not step
    seconds: float
    layers: int
    traced_layers: int


def simulate_fsdp2(model_spec, precision: Precision, optimizers: list[str], cfg: ParallelConfig,
                   batch_size: int, seq_len: int) -> ParallelSimulation:
    """Rank 0's memory under FSDP2 for each optimizer; needs ``fake_process_group(cfg.world_size)``."""
    t0 = time.perf_counter()
    layers = est.model_depth(model_spec)
    depth = min(layers, est.TRACE_DEPTH)
    fb, _, traced = _trace_forward_backward(model_spec, precision, cfg, batch_size, seq_len, depth)
    fb_peak, _ = est._extend(fb.segments, depth, layers)
    traced_params = local_bytes(traced.parameters())
    del traced
    # The optimizer steps run over the whole model (fake shards are cheap): exact, no extension.
    _, fake_mode, model, _ = _sharded_model(model_spec, precision, cfg, layers)
    params = local_bytes(model.parameters())
    ranks = []
    for name in optimizers:
        try:
            step = _trace_steps(name, model, fake_mode)
        except EnvironmentUnavailable as e:
            ranks.append(str(e))
            continue
        except Exception as e:  # an optimizer that cannot step on sharded (DTensor) parameters
            from sgdsai_cli.errors import error_text

            ranks.append(error_text(e))
            continue
        grads = local_bytes(p.grad for p in model.parameters())
        state = sum(step.state_bytes_by_key.values())
        transient = max(step.first_peak, state + step.steady_peak) - state
        peak = params + state + max(fb_peak, grads + transient)
        ranks.append(RankEstimate(
            optimizer=name, impl=step.impl, param_bytes=params, grad_bytes=grads, state_bytes=state,
            state_bytes_by_key=step.state_bytes_by_key, forward_backward_peak_bytes=fb_peak,
            step_transient_bytes=transient, peak_bytes=peak,
            details={"unsharded_root_bytes": fb.unsharded["root"], "unsharded_block_bytes": fb.unsharded["block"],
                     "all_gather_block_bytes": fb.group_padded_bytes["block"],
                     # gradients are in the parameters' dtype (no mixed-precision policy): the same size
                     "reduce_scatter_block_bytes": fb.group_padded_bytes["block"],
                     "all_gather_root_bytes": fb.group_padded_bytes["root"],
                     "first_step_peak_bytes": step.first_peak, "steady_step_peak_bytes": step.steady_peak,
                     "scalar_reads": step.scalar_reads, "trace_ops": fb.ops,
                     "traced_grad_bytes": fb.grad_bytes, "traced_param_bytes": traced_params}))
    return ParallelSimulation(cfg, ranks, time.perf_counter() - t0, layers, depth)
