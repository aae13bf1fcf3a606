"""The caching-allocator model on hand-made event sequences, its config parser, and the trace replay.

Every expected figure is derived in the comment beside it from the rules of
``c10/cuda/CUDACachingAllocator.cpp`` as quoted in ``measure/allocator.py``.
"""

from __future__ import annotations

import pytest

from sgdsai_cli.errors import BadInput
from sgdsai_cli.measure import allocator_trace as at
from sgdsai_cli.measure import estimate as est
from sgdsai_cli.measure.allocator import CachingAllocatorModel, replay
from sgdsai_cli.measure.allocator_config import config_from_env, parse_alloc_conf
from sgdsai_cli.models import resolve_model
from sgdsai_cli.precision import resolve_precision

KiB, MiB = 1024, 1024**2


def a(key, nbytes, stream=0):
    return ("a", key, nbytes, stream)


def f(key):
    return ("f", key)


# (name, config, events, reserved peak, allocated peak)
CASES = [
    # 1 B rounds to 512 (kMinBlockSize), small pool: one 2 MiB segment (kSmallBuffer)
    ("one byte", "", [a(1, 1)], 2 * MiB, 512),
    # 4096 x 512 B fill one 2 MiB segment exactly (each split leaves >= 512 B until the last);
    # the 4097th needs a second segment
    ("small pool fills", "", [a(i, 512) for i in range(4097)], 4 * MiB, 4097 * 512),
    # 1 MiB exactly is still small (<= kSmallSize): a 2 MiB segment
    ("1 MiB is small", "", [a(1, MiB)], 2 * MiB, MiB),
    # 1 MiB + 1 B rounds to 1 MiB + 512: large pool, under kMinLargeAlloc: a 20 MiB segment
    # (kLargeBuffer); the remainder (19 MiB - 512 > 1 MiB) is split off and serves the second
    ("1-10 MiB share 20 MiB", "", [a(1, MiB + 1), a(2, MiB + 1)], 20 * MiB, 2 * (MiB + 512)),
    # 10 MiB is not < kMinLargeAlloc: its own segment rounded to 2 MiB (kRoundLarge) = 10 MiB
    ("10 MiB own segment", "", [a(1, 10 * MiB)], 10 * MiB, 10 * MiB),
    # 11 MiB + 1 B: 11 MiB + 512 in a segment rounded up to 12 MiB; under 1 MiB remains: not split
    ("round large to 2 MiB", "", [a(1, 11 * MiB + 1)], 12 * MiB, 12 * MiB),
    # 19 MiB in a 20 MiB segment: 1 MiB remains, not > kSmallSize: not split, the block is 20 MiB
    ("no split under 1 MiB", "", [a(1, 19 * MiB)], 20 * MiB, 20 * MiB),
    # two 12 MiB segments freed do not merge (different segments): 20 MiB needs a third
    ("no merge across segments", "", [a(1, 12 * MiB), a(2, 12 * MiB), f(1), f(2), a(3, 20 * MiB)],
     44 * MiB, 24 * MiB),
    # two 2 MiB blocks split from one 20 MiB segment coalesce when freed: 19 MiB reuses it
    ("coalesce in a segment", "", [a(1, 2 * MiB), a(2, 2 * MiB), f(1), f(2), a(3, 19 * MiB)],
     20 * MiB, 20 * MiB),
    # best fit: free 12 and 16 MiB segments; 11 MiB takes the 12 (1 MiB left, not split), 15 the
    # 16; the next 11 MiB finds nothing: a new 12 MiB segment. 12 + 16 + 12 = 40
    ("best fit", "", [a(1, 12 * MiB), a(2, 16 * MiB), f(1), f(2), a(3, 11 * MiB), a(4, 15 * MiB),
                      a(5, 11 * MiB)], 40 * MiB, 40 * MiB),
    # default: a freed 100 MiB block is split for 30 MiB: no new segment
    ("split big block", "", [a(1, 100 * MiB), f(1), a(2, 30 * MiB)], 100 * MiB, 100 * MiB),
    # max_split_size_mb:64: a request under 64 MiB never takes a block >= 64 MiB: a new 30 MiB segment
    ("max_split protects oversize", "max_split_size_mb:64", [a(1, 100 * MiB), f(1), a(2, 30 * MiB)],
     130 * MiB, 100 * MiB),
    # an oversize request takes an oversize block under size + kLargeBuffer (90 + 20 > 100), whole
    ("oversize within 20 MiB", "max_split_size_mb:64", [a(1, 100 * MiB), f(1), a(2, 90 * MiB)],
     100 * MiB, 100 * MiB),
    # ... but not one 20 MiB or more larger (100 >= 70 + 20): a new 70 MiB segment
    ("oversize beyond 20 MiB", "max_split_size_mb:64", [a(1, 100 * MiB), f(1), a(2, 70 * MiB)],
     170 * MiB, 100 * MiB),
    # max_non_split_rounding_mb:40 widens the tolerance: 100 < 70 + 40, reused whole
    ("oversize rounding option", "max_split_size_mb:64,max_non_split_rounding_mb:40",
     [a(1, 100 * MiB), f(1), a(2, 70 * MiB)], 100 * MiB, 100 * MiB),
    # streams: a block freed on stream 0 is not reused on stream 1
    ("per stream", "", [a(1, 12 * MiB, 0), f(1), a(2, 12 * MiB, 1)], 24 * MiB, 12 * MiB),
    # expandable: 3 MiB maps one 20 MiB page of the large pool's segment; 30 MiB then extends the
    # free 17 MiB tail by one more page (17 + 20 >= 30): 40 MiB, not 20 + 30
    ("expandable grows", "expandable_segments:True", [a(1, 3 * MiB), a(2, 30 * MiB)], 40 * MiB, 33 * MiB),
    ("no expandable", "", [a(1, 3 * MiB), a(2, 30 * MiB)], 50 * MiB, 33 * MiB),
    # expandable: the freed 12 + 12 MiB of two requests stay one block, 20 MiB reuses them
    ("expandable merges", "expandable_segments:True",
     [a(1, 12 * MiB), a(2, 12 * MiB), f(1), f(2), a(3, 20 * MiB)], 40 * MiB, 24 * MiB),
    # expandable small pool maps 2 MiB pages
    ("expandable small", "expandable_segments:True", [a(1, 512)], 2 * MiB, 512),
    # roundup_power2_divisions:4: 5 MiB + 1 lies in [4, 8) MiB, steps of 1 MiB: 6 MiB
    ("power2 divisions", "roundup_power2_divisions:4", [a(1, 5 * MiB + 1)], 20 * MiB, 6 * MiB),
    # 1,200,000 B lies in [1, 2) MiB, steps of 256 KiB: 1,310,720 B (large pool, 20 MiB segment)
    ("power2 divisions 1 MiB", "roundup_power2_divisions:4", [a(1, 1_200_000)], 20 * MiB, 1_310_720),
    # a power of two is not rounded
    ("power2 exact", "roundup_power2_divisions:8", [a(1, 16 * MiB)], 16 * MiB, 16 * MiB),
]


@pytest.mark.parametrize("name,conf,events,reserved,allocated", CASES, ids=[c[0] for c in CASES])
def test_hand_made_sequences(name, conf, events, reserved, allocated):
    r = replay(events, parse_alloc_conf(conf))
    assert (r.reserved_peak_bytes, r.allocated_peak_bytes) == (reserved, allocated)
    assert r.fragmentation_bytes == reserved - allocated


def test_garbage_collection_under_a_memory_limit():
    """Reserved 100 MiB of free 50 MiB segments, limit 120 MiB, threshold 0.5 (60 MiB): a 30 MiB
    request finds no fit (each free block is 50 MiB >= max_split 40), so GC releases whole free
    segments of at least average age until reserved is under 60 MiB: both go (all ages equal),
    then 30 MiB is mapped: reserved 30 MiB at the end, the peak stays 100 MiB."""
    cfg = parse_alloc_conf("garbage_collection_threshold:0.5,max_split_size_mb:40")
    events = [a(1, 50 * MiB), a(2, 50 * MiB), f(1), f(2), a(3, 30 * MiB)]
    r = replay(events, cfg, memory_limit_bytes=120 * MiB)
    assert (r.reserved_peak_bytes, r.reserved_end_bytes) == (100 * MiB, 30 * MiB)
    # without a limit (no memory fraction set) garbage collection never runs: 130 MiB
    assert replay(events, cfg).reserved_end_bytes == 130 * MiB


def test_memory_limit_releases_cached_segments_then_counts_an_oom():
    """At a 64 MiB limit a free 40 MiB segment is released to make room for 50 MiB (40 + 50 > 64);
    then 20 more MiB would pass the limit with nothing cached: one OOM."""
    events = [a(1, 40 * MiB), f(1), a(2, 50 * MiB), a(3, 20 * MiB)]
    r = replay(events, None, memory_limit_bytes=64 * MiB)
    assert r.ooms == 1
    assert r.reserved_peak_bytes == 70 * MiB  # 50 + 20 once the limit is dropped after the OOM


def test_model_rounding_and_double_free():
    m = CachingAllocatorModel()
    assert [m.round_size(n) for n in (0, 1, 512, 513)] == [512, 512, 512, 1024]
    b = m.malloc(100)
    m.free(b)
    with pytest.raises(ValueError):
        m.free(b)


@pytest.mark.parametrize("text,field,value", [
    ("expandable_segments:True", "expandable_segments", True),
    ("max_split_size_mb:128", "max_split_size_bytes", 128 * MiB),
    ("garbage_collection_threshold:0.6", "garbage_collection_threshold", 0.6),
    # torch's parser: 1 MB -> interval 0; 4 MB -> interval 2 (interval 1 stays 0); '>' fills from 2 on
    ("roundup_power2_divisions:[1:2,4:4,>:8]", "roundup_power2_divisions", (2, 0) + (8,) * 14),
    ("roundup_power2_divisions: 4", "roundup_power2_divisions", (4,) * 16),
    ("backend:cudaMallocAsync", "backend", "cudaMallocAsync"),
    ("release_lock_on_cudamalloc:True", "expandable_segments", False),
])
def test_config_parsing(text, field, value):
    assert getattr(parse_alloc_conf(text), field) == value


def test_config_interval_list_follows_torch_parser():
    # parseRoundUpPower2Divisions: the first key fills the intervals below it; '>' fills from the last key on
    d = parse_alloc_conf("roundup_power2_divisions:[256:1,512:2,1024:4,>:8]").roundup_power2_divisions
    assert d == (1,) * 9 + (2,) + (8,) * 6
    assert parse_alloc_conf("roundup_power2_divisions:[256:1,>:8]").divisions(300 * MiB) == 8


@pytest.mark.parametrize("text", ["max_split_size_mb:19", "max_non_split_rounding_mb:10",
                                  "expandable_segments:yes", "nonsense:1",
                                  "garbage_collection_threshold:1.5", "roundup_power2_divisions:3",
                                  "roundup_power2_divisions:[3:2]", "roundup_power2_divisions:0",
                                  "max_split_size_mb", "backend:x"])
def test_config_errors_are_bad_input(text):
    with pytest.raises(BadInput) as e:
        parse_alloc_conf(text)
    assert e.value.field == "PYTORCH_CUDA_ALLOC_CONF"


def test_config_from_environment():
    assert config_from_env({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}).expandable_segments
    assert not config_from_env({}).expandable_segments
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "PYTORCH_ALLOC_CONF": "max_split_size_mb:64"}
    assert config_from_env(env).max_split_size_bytes == 64 * MiB  # PYTORCH_ALLOC_CONF is preferred


# ----------------------------------------------------------------------------------------------
# the fake-tensor trace, replayed


def _canonical(events) -> list:
    """('a', size) / ('f', index of the allocation), each run of frees sorted: the order of frees
    with no allocation between them does not change the allocator's state after them."""
    index, out, run = {}, [], []
    for ev in events:
        if ev[0] == "a":
            out += sorted(run)
            run = []
            index[ev[1]] = len(index)
            out.append(("a", ev[2]))
        else:
            run.append(("f", index[ev[1]]))
    return out + sorted(run)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-vit"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "amp-bf16"])
def test_depth_extension_rebuilds_the_full_trace(model, precision):
    """A 6-block trace rebuilt from the depth-3 one is the full trace, event for event."""
    spec = est.with_depth(resolve_model(model), 6)
    prec = resolve_precision(precision)
    short = est.trace_forward_backward(spec, prec, 2, 16, extrapolate=True)
    full = est.trace_forward_backward(spec, prec, 2, 16, extrapolate=False)
    ext = at.extend_events(short.events, 3, 6)
    assert ext.mismatches == 0
    assert _canonical(ext.events) == _canonical(at.flatten(full.events).events)


def test_estimate_reports_reserved_and_replays_the_allocated_peak():
    spec, prec = resolve_model("tiny-llama"), resolve_precision("fp32")
    e = est.estimate_step(spec, prec, "sgdsai", 2, 16, alloc_conf="")
    info = e.details["allocator"]
    # the replay's requested peak is the estimate's peak: the same trace, laid out as a run
    assert info["requested_peak_bytes"] == e.peak_bytes
    assert e.reserved_peak_bytes == e.details["reserved_peak_bytes"] == info["reserved_peak_bytes"]
    assert e.reserved_peak_bytes >= info["allocated_peak_bytes"] >= e.peak_bytes
    assert info["depth_extension"] == "full" and info["config"] == ""
    expandable = est.estimate_step(spec, prec, "sgdsai", 2, 16, alloc_conf="expandable_segments:True")
    assert expandable.details["allocator"]["config"] == "expandable_segments:True"
    with pytest.raises(BadInput):
        est.estimate_step(spec, prec, "sgdsai", 2, 16, alloc_conf="bogus:1")


def test_training_events_layout():
    """Parameters, then per step: forward/backward, the step, zero_grad freeing the gradients."""
    fb = [("a", 0, 100), ("a", 1, 10), ("f", 1)]  # a gradient (left live) and a temporary
    first = [("a", 0, 100), ("a", 1, 7), ("f", 1)]  # state (kept) and a transient
    steady = [("a", 0, 7), ("f", 0)]
    evs = at.training_events([50], fb, first, steady, steps=2)
    sizes = [e[2] for e in evs if e[0] == "a"]
    assert sizes == [50, 100, 10, 100, 7, 100, 10, 7]
    # params 50; step 1: grad 100, temporary 10 (260 in all) freed, state 100, transient 7 (257);
    # zero_grad; step 2: grad 100 and temporary 10 on params + state: 50 + 100 + 100 + 10 = 260
    assert replay(evs).requested_peak_bytes == 260
    assert evs[-1] == ("f", (("fb", 1), 0))  # the last step ends with zero_grad freeing the gradient


def test_replay_under_a_limit_fits_or_counts_an_oom():
    spec, prec = resolve_model("tiny-llama"), resolve_precision("fp32")
    e = est.estimate_step(spec, prec, "sgdsai", 2, 16, alloc_conf="")
    roomy = at.replay_under_limit(spec, prec, "sgdsai", 2, 16, e.reserved_peak_bytes, alloc_conf="")
    assert roomy.ooms == 0 and roomy.reserved_peak_bytes == e.reserved_peak_bytes
    tight = at.replay_under_limit(spec, prec, "sgdsai", 2, 16, e.peak_bytes // 2, alloc_conf="")
    assert tight.ooms > 0
