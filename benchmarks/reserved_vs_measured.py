"""The caching-allocator model against measured CUDA runs: predicted vs measured reserved peak.

    python benchmarks/reserved_vs_measured.py reports/gpu-h100/run2/profile-*.json
    python benchmarks/reserved_vs_measured.py --model llama2-7b --precision fp32 --batch-size 1 \
        --seq-len 256 --optimizer sgdsai --measured-reserved 83986644992

For each measured run of each profile JSON (or the one run described by the options) the fake
trace is made here, on the CPU, for the same model, precision, batch and optimizer path, and
replayed through ``measure.allocator`` under ``PYTORCH_CUDA_ALLOC_CONF`` of this process (set it
to what the run used). Prints predicted and measured reserved and allocated peaks and the errors;
``--json`` writes them. Nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GiB = 1024**3


def _predict(model: str, precision: str, optimizer: str, batch_size: int, seq_len: int) -> dict:
    from sgdsai_cli.measure import estimate as est
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.precision import resolve_precision

    e = est.estimate_step(resolve_model(model), resolve_precision(precision), optimizer, batch_size, seq_len)
    return {"reserved_peak_bytes": e.reserved_peak_bytes, "peak_bytes": e.peak_bytes,
            "allocator": e.details["allocator"]}


def _rows_from(path: Path) -> list[dict]:
    from sgdsai_cli.measure.compare import estimate_name

    doc = json.loads(path.read_text())
    spec, rows = doc["spec"], []
    for run in doc["runs"]:
        m = run.get("memory") or {}
        if run["status"] != "ok" or not m.get("peak_reserved_bytes"):
            continue
        rows.append({"source": str(path), "model": spec["model"], "precision": spec["precision"],
                     "batch_size": spec["batch_size"], "seq_len": spec["seq_len"],
                     "optimizer": estimate_name(run["optimizer"], run.get("impl")),
                     "measured_reserved_bytes": m["peak_reserved_bytes"],
                     "measured_allocated_bytes": m.get("peak_allocated_bytes"),
                     "device": (doc.get("environment", {}).get("device") or {}).get("name"),
                     "torch": doc.get("environment", {}).get("torch")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="*", type=Path, help="profile JSONs of real CUDA runs")
    ap.add_argument("--model")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--optimizer", default="sgdsai")
    ap.add_argument("--measured-reserved", type=int, help="bytes, for the run given by the options")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [r for p in args.profiles for r in _rows_from(p)]
    if args.model:
        rows.append({"source": "options", "model": args.model, "precision": args.precision,
                     "batch_size": args.batch_size, "seq_len": args.seq_len, "optimizer": args.optimizer,
                     "measured_reserved_bytes": args.measured_reserved, "measured_allocated_bytes": None})
    if not rows:
        ap.error("give profile JSONs of CUDA runs or --model")
    for r in rows:
        r.update(_predict(r["model"], r["precision"], r["optimizer"], r["batch_size"], r["seq_len"]))
        meas = r["measured_reserved_bytes"]
        r["reserved_error_pct"] = None if not meas else round(100 * (r["reserved_peak_bytes"] - meas) / meas, 3)
        ma = r["measured_allocated_bytes"]
        r["allocated_error_pct"] = None if not ma else round(100 * (r["peak_bytes"] - ma) / ma, 3)
        f = lambda b: "-" if b is None else f"{b / GiB:.3f}"  # noqa: E731
        print(f"{r['model']} {r['precision']} {r['batch_size']}x{r['seq_len']} {r['optimizer']}: reserved "
              f"predicted {f(r['reserved_peak_bytes'])} GiB, measured {f(meas)} GiB "
              f"({r['reserved_error_pct']} %); allocated estimated {f(r['peak_bytes'])}, measured {f(ma)} "
              f"({r['allocated_error_pct']} %); depth extension {r['allocator']['depth_extension']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
