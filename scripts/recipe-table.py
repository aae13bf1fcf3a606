"""The recipe table of a model: state, activations and estimated peak per training recipe and optimizer.

    .venv/bin/python scripts/recipe-table.py --model llama2-7b --out reports/recipes-llama2-7b.md

Every figure comes from ``sgdsai_cli.profile`` on the meta device (exact sizing, the fake-tensor step
estimate), batch 1 x seq 512 unless told otherwise. Optimizers the installed extras cannot build (8-bit
AdamW without bitsandbytes) are left out and the table says so.
"""

from __future__ import annotations

import argparse
import sys
import time

RECIPES = [  # (label, precision, LoRA spec or None)
    ("full fp32", "fp32", None),
    ("full bf16", "bf16", None),
    ("bf16-master (fp32 master weights and state)", "bf16-master", None),
    ("LoRA r=16 q,v (bf16 base)", "bf16", "r=16,alpha=32,targets=q_proj,v_proj"),
    ("QLoRA r=16 q,v (nf4 base)", "bf16", "r=16,alpha=32,targets=q_proj,v_proj,quant=nf4"),
]
OPTIMIZERS = ["sgdsai", "adamw", "adamw-fused", "adamw8bit"]
GiB = 1024**3


def main() -> int:
    import torch

    from sgdsai_cli import profile
    from sgdsai_cli.errors import SgdsaiError
    from sgdsai_cli.optim.registry import resolve_optimizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama2-7b")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    optimizers, missing = [], []
    for name in OPTIMIZERS:
        try:
            resolve_optimizer(name)
            optimizers.append(name)
        except SgdsaiError:
            missing.append(name)
    lines = [f"# Training recipes for {args.model}: state, activations and estimated peak (GiB)", "",
             f"`scripts/recipe-table.py --model {args.model}`: `sgdsai_cli.profile` on the meta device, batch 1 x seq "
             f"{args.seq_len}; torch {torch.__version__} on a 2-core CPU VM, no GPU. State and parameter bytes are "
             "exact (a real optimizer step on meta); activations and peak come from the fake-tensor trace. "
             "Peak = params + state + max(forward/backward peak incl. gradients, batch + gradients + step "
             "temporaries); a CUDA run adds the allocator's rounding and the CUDA context.", ""]
    if missing:
        lines += [f"Left out (not available here): {', '.join(missing)}.", ""]
    lines += ["| recipe | checkpointing | trainable | optimizer | impl | params | grads | state | activations | "
              "step tmp | peak |", "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    t0 = time.perf_counter()
    for label, precision, lora in RECIPES:
        for ckpt in ("none", "full"):
            result = profile(model=args.model, device="meta", precision=precision, lora=lora, seq_len=args.seq_len,
                             activation_checkpointing=ckpt, optimizers=optimizers)
            m = result.model
            for run in result.runs:
                mem = run.memory
                if run.status != "ok" or mem is None:
                    lines.append(f"| {label} | {ckpt} | {m.trainable_params:,} | {run.optimizer} | - | "
                                 f"{run.status}: {run.error} | | | | | |")
                    continue

                def g(x):
                    return "-" if x is None else f"{x / GiB:.2f}"

                lines.append(f"| {label} | {ckpt} | {m.trainable_params:,} | {run.optimizer} | {run.impl} | "
                             f"{g(mem.param_bytes)} | {g(mem.grad_bytes)} | {g(mem.state_bytes)} | "
                             f"{g(mem.activation_peak_bytes)} | {g(mem.step_transient_bytes)} | "
                             f"{g(mem.estimated_peak_bytes)} |")
            print(f"{label} / {ckpt}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
