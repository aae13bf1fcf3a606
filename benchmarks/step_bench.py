"""Optimizer-step benchmark: SGD-SaI's implementations against torch AdamW, interleaved.

    .venv/bin/python benchmarks/step_bench.py                       # gpt2 and one llama2-7b layer, CPU
    .venv/bin/python benchmarks/step_bench.py --device cuda --case llama2-7b:8 --precision bf16
    .venv/bin/python benchmarks/step_bench.py --repeats 3 --json out/step_bench.json

Each case is one ``sgdsai bench-step`` run (``sgdsai_cli.measure.bench``): parameter and gradient
tensors shaped like the preset (``MODEL:N`` keeps the first N decoder layers), every optimizer
stepping once per round in a rotated order, a ``copy_`` in the same rounds for the device's
bandwidth. Prints one line per optimizer with the median step time, GB/s moved, the share of
copy bandwidth and the median ratio to AdamW(fused=True) with its range over the rounds; with
--repeats it runs each case again in a fresh round set and prints the ratios of every repeat,
so the spread on a shared machine is visible. Not a test: nothing here fails on a ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OPTIMIZERS = ("sgdsai", "sgdsai:fused", "sgdsai:foreach", "sgdsai:loop", "adamw-fused", "adamw-foreach")


def _case(text: str) -> tuple[str, int | None]:
    model, _, layers = text.partition(":")
    return model, int(layers) if layers else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", help="MODEL or MODEL:LAYERS (repeatable) "
                    "[default: gpt2 and llama2-7b:1]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--optimizer", "-o", action="append", help=f"repeatable [default: {', '.join(OPTIMIZERS)}]")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write every document (a JSON list) here")
    args = ap.parse_args(argv)

    from sgdsai_cli.errors import SgdsaiError
    from sgdsai_cli.files import write_json_atomic
    from sgdsai_cli.measure.bench import BenchSpec, bench_step

    docs = []
    for case in args.case or ["gpt2", "llama2-7b:1"]:
        model, layers = _case(case)
        ratios: dict[str, list[float]] = {}
        for rep in range(args.repeats):
            spec = BenchSpec(model=model, device=args.device, precision=args.precision, layers=layers,
                             optimizers=tuple(args.optimizer or OPTIMIZERS), warmup=args.warmup, steps=args.steps)
            try:
                doc = bench_step(spec).to_dict()
            except SgdsaiError as e:
                print(f"error: {case}: {e}", file=sys.stderr)
                return e.exit_code
            docs.append(doc)
            dev = doc["environment"]["device"]
            print(f"{case} {args.precision} on {dev['name']} ({doc['spec']['device']}), repeat {rep + 1}: "
                  f"{doc['tensors']['params']:,} params, copy {doc['copy']['gb_per_s']:.1f} GB/s")
            for r in doc["rows"]:
                if r["status"] != "ok":
                    print(f"  {r['optimizer']:<15} {r['status']}: {r['error']}")
                    continue
                lo, hi = r["ratio_range"] or (float("nan"), float("nan"))
                ratio = r["ratio_to_adamw_fused"]
                ratios.setdefault(r["optimizer"], []).append(ratio)
                print(f"  {r['optimizer']:<15} {r['impl']:<9} {r['step_ms']['p50']:9.2f} ms  "
                      f"first {r['first_step_ms']:8.1f} ms  {r['gb_per_s'] or 0:7.1f} GB/s  "
                      f"{(r['bandwidth_fraction'] or 0):5.0%} of copy  x{ratio:.3f} of adamw-fused "
                      f"({lo:.2f}-{hi:.2f})")
        if args.repeats > 1:
            print(f"{case}: median ratio to adamw-fused in each repeat")
            for name, values in ratios.items():
                print(f"  {name:<15} " + "  ".join(f"{v:.3f}" for v in values))
    if args.json:
        write_json_atomic(args.json, docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
