"""Does the sampler thread slow training down? Step latency with the sampler on and off.

    python benchmarks/sampler_overhead.py --model gpt2 --device cuda --interval-ms 10
    python benchmarks/sampler_overhead.py --model tiny-gpt2 --device cpu --seq-len 64 --rounds 4

The worker's own training loop (``sgdsai_cli.measure.training.TrainingRun``: the same phases, CUDA
events, per-phase ``memory_stats``) runs in this one process on one model; rounds alternate sampler on and off
(ABBA order, so drift cancels), each round ``--steps`` steps. Reported: the p50 step time of each
mode (the sum of the four phase timings: CUDA events on CUDA), the wall-clock time per step,
and the ratio on/off, per adjacent on/off round pair (the headline: the median of those, robust
to drift) and over all steps. The issue's bar: under 2 %.
Prints one summary line per figure and, with --json, writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=12, help="rounds in all (even; half with the sampler on)")
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from sgdsai_cli.measure.job import Job
    from sgdsai_cli.measure.phases import PHASES
    from sgdsai_cli.measure.training import TrainingRun
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.results import ProfileSpec

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 3
    spec = ProfileSpec(model=args.model, precision=args.precision, device=args.device, batch_size=args.batch_size,
                       seq_len=args.seq_len, warmup=0, steps=0)
    job = Job(spec, resolve_model(args.model), args.optimizer, sample_interval_ms=args.interval_ms)
    run = TrainingRun(job)
    run.setup()
    run.stop()  # the sampler off and the tracker off: measured steps run untracked, as in the worker
    sampler = run.sampler
    for _ in range(3):  # warm up: state allocated, kernels chosen
        run.train_step(timed=True, record_memory=True)
    run.recorder.collect_times()

    steps = {"on": [], "off": []}
    wall = {"on": [], "off": []}
    pairs = []
    order = ["on", "off", "off", "on"]
    for r in range(args.rounds):
        mode = order[r % 4]
        if mode == "on":
            sampler.start()
        if run.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            run.train_step(timed=True, record_memory=True)
        times = run.recorder.collect_times()  # synchronizes
        wall[mode].append((time.perf_counter() - t0) * 1000.0 / args.steps)
        if mode == "on":
            sampler.stop()
        per_step = [sum(v) for v in zip(*(times[p] for p in PHASES), strict=True)]
        steps[mode].append(statistics.median(per_step))
        if len(steps["on"]) == len(steps["off"]) and r % 2 == 1:
            pairs.append(steps["on"][-1] / steps["off"][-1])

    p50_on, p50_off = statistics.median(steps["on"]), statistics.median(steps["off"])
    wall_on, wall_off = statistics.median(wall["on"]), statistics.median(wall["off"])
    device = torch.cuda.get_device_name() if run.is_cuda else "cpu"
    result = {
        "model": args.model, "precision": args.precision, "device": device, "optimizer": args.optimizer,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "interval_ms": args.interval_ms,
        "rounds": args.rounds, "steps_per_round": args.steps, "samples_taken": len(sampler.rows),
        "step_ms_p50_on": p50_on, "step_ms_p50_off": p50_off, "ratio_on_off": p50_on / p50_off,
        "ratio_per_pair_median": statistics.median(pairs) if pairs else None,
        "wall_ms_per_step_on": wall_on, "wall_ms_per_step_off": wall_off, "wall_ratio_on_off": wall_on / wall_off,
    }
    print(f"sampler overhead: {args.model} {args.precision} {args.optimizer} on {device}, "
          f"batch {args.batch_size} x {args.seq_len}, sampling every {args.interval_ms:g} ms "
          f"({len(sampler.rows)} samples)")
    print(f"  step p50 (phase timings): on {p50_on:.3f} ms, off {p50_off:.3f} ms, "
          f"ratio {result['ratio_on_off']:.4f} ({100 * (result['ratio_on_off'] - 1):+.2f} %)")
    if pairs:
        print(f"  median of per-pair ratios: {result['ratio_per_pair_median']:.4f}")
    print(f"  wall clock per step: on {wall_on:.3f} ms, off {wall_off:.3f} ms, "
          f"ratio {result['wall_ratio_on_off']:.4f} ({100 * (result['wall_ratio_on_off'] - 1):+.2f} %)")
    headline = result["ratio_per_pair_median"] or result["ratio_on_off"]
    result["overhead_pct"] = 100 * (headline - 1)
    print(f"  overhead (median of per-pair ratios): {result['overhead_pct']:+.2f} %; "
          f"within 2 %: {'yes' if abs(headline - 1) < 0.02 else 'no'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
