"""From the fake-tensor trace to the caching-allocator model: the events of whole training steps.

The estimate (``measure.estimate``) traces forward + backward of a deep model at depth 3 (blocks 0,
1 and L-1) and the optimizer step over the full model. ``extend_events`` rebuilds the L-block event
sequence from the depth-3 one; ``training_events`` lays out what a real run does (parameters, then
``steps`` times forward + backward, ``optimizer.step()`` and ``zero_grad()``), and ``predict_reserved``
replays it through ``allocator.CachingAllocatorModel``.

Depth extension. The trace is cut by markers into segments: ``F0, F1, F2`` (forward of block 0, 1,
2), ``B2, B1, B0`` (their backward) and the non-block segments around them (``pre``, ``epi``,
``exit``, ``loss``, ``post``, ...). In the L-block timeline ``F1`` repeats for blocks 1..L-2 and
``B1`` for blocks L-2..1; block segments stand for real blocks 0 -> 0, 1 -> i, 2 -> L-1. Each
allocation is named by (segment kind, real block, its index among the allocations of its
segment); a free in block ``r`` of an allocation the trace made ``d`` blocks away is the free of
that allocation at block ``r + d`` (a block's output is freed by its successor's backward, a
gradient by its predecessor's); a free in a non-block segment of an allocation of block 1 frees it
for every middle block (leaving autocast frees all the cached weight copies). Identical blocks
allocate the same sizes in the same order, so the rebuilt sequence is the L-block trace itself:
the tests compare it, event by event, with full traces of deeper models. Where it is not (a free
whose target has another size or was never allocated), ``mismatches`` counts them and the replay is then an
approximation; the estimate says so.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sgdsai_cli.measure import trace_cache
from sgdsai_cli.measure.allocator import ReplayResult, replay
from sgdsai_cli.measure.allocator_config import AllocatorConfig, config_from_env, parse_alloc_conf


def _block_of(label: str) -> tuple[str, int] | None:
    if len(label) >= 2 and label[0] in "FB" and label[1:].isdigit():
        return label[0], int(label[1:])
    return None


def _segments(events) -> list[tuple[str, list[tuple]]]:
    segs: list[tuple[str, list[tuple]]] = [("start", [])]
    for ev in events:
        if ev[0] == "m":
            segs.append((ev[1], []))
        else:
            segs[-1][1].append(ev)
    return segs


@dataclass(frozen=True)
class Extended:
    events: list[tuple]  # ("a", key, nbytes) / ("f", key), keys unique
    mismatches: int  # frees that could not be matched exactly (0: the sequence is exact)


def flatten(events) -> Extended:
    """The trace's events without its markers."""
    return Extended([ev for ev in events if ev[0] != "m"], 0)


def extend_events(events, traced: int, layers: int) -> Extended:
    """The ``layers``-block event sequence from a ``traced``-block (3) trace with markers."""
    if layers <= traced:
        return flatten(events)
    if traced != 3:
        raise ValueError(f"depth extension needs a 3-block trace, not {traced}")
    segs = _segments(events)
    origin: dict[int, tuple[str, int | None, int]] = {}  # trace key -> (kind or label, trace block, index)
    sizes: dict[tuple[str, int | None, int], int] = {}
    for label, evs in segs:
        blk = _block_of(label)
        kind, b = blk if blk else (label, None)
        k = 0
        for ev in evs:
            if ev[0] == "a":
                origin[ev[1]] = (kind, b, k)
                sizes[(kind, b, k)] = ev[2]
                k += 1

    def trace_block(real: int) -> int:
        return 0 if real == 0 else (2 if real == layers - 1 else 1)

    out: list[tuple] = []
    live: dict[tuple, int] = {}  # real name -> new key
    freed: set[tuple] = set()
    mismatches = 0

    def free(name: tuple, nbytes: int) -> None:
        nonlocal mismatches
        key = live.pop(name, None)
        if key is None:  # freed already: two trace frees map to one allocation, the first one holds
            mismatches += name not in freed
            return
        freed.add(name)
        kind, real, k = name
        tb = trace_block(real) if real is not None else None
        if sizes.get((kind, tb, k)) != nbytes:
            mismatches += 1
        out.append(("f", key))

    for label, evs in segs:
        blk = _block_of(label)
        if blk and blk[1] == 1:
            reals = range(1, layers - 1) if blk[0] == "F" else range(layers - 2, 0, -1)
        elif blk:
            reals = [0 if blk[1] == 0 else layers - 1]
        else:
            reals = [None]
        for real in reals:
            k = 0
            for ev in evs:
                if ev[0] == "a":
                    name = (blk[0] if blk else label, real, k)
                    live[name] = len(out)
                    out.append(("a", len(out), ev[2]))
                    k += 1
                    continue
                src = origin.get(ev[1])
                if src is None:
                    continue
                kind, ba, k_src = src
                nbytes = sizes[src]
                if ba is None:  # made outside the blocks: freed once, by its first instance
                    if (kind, None, k_src) in live:
                        free((kind, None, k_src), nbytes)
                    elif real is None or real == reals[0]:
                        mismatches += 1
                    continue
                if blk:
                    targets = [real + (ba - blk[1])]
                else:
                    targets = list(range(1, layers - 1)) if ba == 1 else [0 if ba == 0 else layers - 1]
                for ra in targets:
                    if not 0 <= ra < layers:
                        mismatches += 1
                        continue
                    free((kind, ra, k_src), nbytes)
    return Extended(out, mismatches)


def training_events(param_sizes: list[int], fb: list[tuple], first_step: list[tuple],
                    steady_step: list[tuple], steps: int = 3) -> list[tuple]:
    """The events of a training run: parameters, then ``steps`` x (forward + backward, step, zero_grad).

    What forward + backward leaves live (the gradients) is freed by ``zero_grad()`` (set to None),
    in allocation order; what the first step leaves live is the optimizer state, kept; what a
    later step leaves live is freed at its end.
    """
    out: list[tuple] = [("a", ("p", i), n) for i, n in enumerate(param_sizes)]

    def run(tag, evs) -> list:
        live: dict = {}
        for ev in evs:
            if ev[0] == "a":
                key = (tag, ev[1])
                live[key] = None
                out.append(("a", key, ev[2]))
            else:
                key = (tag, ev[1])
                if key in live:
                    del live[key]
                    out.append(("f", key))
        return list(live)

    for s in range(steps):
        grads = run(("fb", s), fb)
        left = run(("step", s), first_step if s == 0 else steady_step)
        if s > 0:
            out += [("f", k) for k in left]
        out += [("f", k) for k in grads]
    return out


@dataclass(frozen=True)
class ReservedPrediction:
    replay: ReplayResult
    config: AllocatorConfig
    extension: str  # "full" (traced at full depth), "exact" (extended, every free matched), "approximate"
    mismatches: int
    seconds: float

    def details(self) -> dict:
        r = self.replay
        return {
            "config": self.config.text,
            "reserved_peak_bytes": r.reserved_peak_bytes,
            "allocated_peak_bytes": r.allocated_peak_bytes,
            "requested_peak_bytes": r.requested_peak_bytes,
            "fragmentation_bytes": r.fragmentation_bytes,
            "fragmentation": round(r.fragmentation, 4),
            "segments": r.segments,
            "events": r.events,
            "depth_extension": self.extension,
            "seconds": round(self.seconds, 3),
        }


def predict_reserved(param_sizes: list[int], fb_events, traced: int, layers: int,
                     first_step: list[tuple], steady_step: list[tuple], config: AllocatorConfig,
                     steps: int = 3) -> ReservedPrediction:
    """Replay ``steps`` training steps (parameters first) through the allocator model."""
    t0 = time.perf_counter()
    ext = extend_events(fb_events, traced, layers)
    events = training_events(param_sizes, ext.events, first_step, steady_step, steps)
    result = kept_replay(events, config)
    kind = "full" if layers <= traced else ("exact" if ext.mismatches == 0 else "approximate")
    return ReservedPrediction(result, config, kind, ext.mismatches, time.perf_counter() - t0)


def param_storage_sizes(model_spec, precision) -> tuple[int, ...]:
    """Bytes of each distinct parameter, buffer and quant-state storage, in the model's order (a meta build)."""
    from sgdsai_cli.measure.model_bytes import model_bytes

    return model_bytes(model_spec, precision).storage_sizes


def predict_step_reserved(model_spec, precision, fb, st, alloc_conf: str | None = None) -> ReservedPrediction:
    """The prediction for ``estimate.estimate_step``: its forward/backward trace ``fb`` and step trace ``st``.

    ``alloc_conf``: a ``PYTORCH_CUDA_ALLOC_CONF`` string; None reads the variable of this process.
    """
    config = config_from_env() if alloc_conf is None else parse_alloc_conf(alloc_conf)
    return predict_reserved(list(param_storage_sizes(model_spec, precision)), fb.events, fb.traced_layers,
                            fb.layers, list(st.first_events), list(st.steady_events), config)


def replay_under_limit(model_spec, precision, optimizer: str, batch_size: int, seq_len: int,
                       memory_limit_bytes: int, alloc_conf: str | None = None) -> ReplayResult:
    """The same run replayed with the allocator limited to ``memory_limit_bytes`` (card minus context).

    Under the limit a segment that does not fit makes the model release every cached unsplit
    segment and retry, as torch does before raising an out-of-memory (``release_cached_blocks``);
    ``ooms`` > 0 says the step would not fit even then. This is the tighter fit test: it can accept
    a batch whose unlimited reserved peak (``reserved_peak_bytes``) is above the limit, because the
    real allocator gives cached memory back under pressure.
    """
    from sgdsai_cli.measure import estimate as est

    fb = est.trace_forward_backward(model_spec, precision, batch_size, seq_len)
    st = est.trace_step(model_spec, precision, optimizer)
    config = config_from_env() if alloc_conf is None else parse_alloc_conf(alloc_conf)
    ext = extend_events(fb.events, fb.traced_layers, fb.layers)
    events = training_events(list(param_storage_sizes(model_spec, precision)), ext.events,
                             list(st.first_events), list(st.steady_events))
    return kept_replay(events, config, memory_limit_bytes)


def kept_replay(events: list, config: AllocatorConfig, memory_limit_bytes: int | None = None) -> ReplayResult:
    """``allocator.replay``, kept on disk with the traces (``trace_cache``), keyed on the events themselves."""
    if trace_cache.folder() is None:
        return replay(events, config, memory_limit_bytes)
    digest = hashlib.sha256(repr(events).encode()).hexdigest()
    return trace_cache.cached(ReplayResult, "replay", (digest, config, memory_limit_bytes),
                              lambda: replay(events, config, memory_limit_bytes))
