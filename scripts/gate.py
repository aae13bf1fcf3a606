"""The project's own memory-regression gate (``.ci/gate`` runs it; ``.ci/run`` after the tests).

    .ci/gate                          # every committed baseline, profiles/baselines/*.json
    .ci/gate profiles/baselines/gpt2-fp32.json ...

For every baseline: re-size the same spec (model, precision, batch, sequence and optimizers, read
from the baseline itself) on the meta device with ``sgdsai_cli.profile``, then ``sgdsai_cli.check`` the
result against the baseline with tolerance 0 (``GATE_TOLERANCE``): meta sizing and the fake-tensor
estimate are exact and deterministic, so any change in a byte count fails. When a change is meant
to move memory, regenerate with ``scripts/update-baselines.sh`` and commit.

The work is shared by ``GATE_JOBS`` (2) worker processes, largest models first; each imports torch
once for all of its baselines (a command per baseline spent most of its time importing torch).

Exit 0 all baselines hold, 1 a regression (the check table is printed), 2 a broken baseline or setup.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spec_options(path: str) -> dict:
    """The ``sgdsai_cli.profile`` options that reproduce a baseline's spec (ValueError for anything else)."""
    try:
        doc = json.loads(Path(path).read_text())
        spec = doc["spec"]
        return {"model": spec["model"], "precision": spec["precision"], "batch_size": spec["batch_size"],
                "seq_len": spec["seq_len"], "optimizers": [run["optimizer"] for run in doc["runs"]]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a profile baseline ({e.__class__.__name__}: {e})") from None


def _size_hint(path: str) -> int:
    """The baseline's parameter bytes: the larger, the longer its traces (scheduled first)."""
    try:
        return int(json.loads(Path(path).read_text())["model"]["param_bytes"])
    except Exception:
        return 0


def gate_one(path: str, tolerance: str) -> tuple[int, str]:
    """(exit code, what to print) for one baseline; runs in a worker process."""
    import io

    from rich.console import Console

    import sgdsai_cli as sg
    from sgdsai_cli.render.check import check_table

    name = Path(path).stem
    try:
        options = spec_options(path)
    except ValueError as e:
        return 2, f"gate: {path}: cannot read its spec: {e}"
    try:
        result = sg.profile(options.pop("model"), device="meta", **options)
        report = sg.check(result, path, tolerance=tolerance)
    except Exception as e:  # a spec the tool refuses, a baseline it cannot pair: a broken baseline or setup
        return 2, f"gate: {name}: {e.__class__.__name__}: {e}"
    if report.passed:
        return 0, f"gate: ok   {name} ({report.summary()})"
    buffer = io.StringIO()
    Console(file=buffer, width=160, color_system=None).print(check_table(report))
    return 1, f"gate: FAIL {name} (exit 1)\n{buffer.getvalue().rstrip()}\n{report.summary()}"


def main(argv: list[str]) -> int:
    baselines = argv or sorted(glob.glob(str(ROOT / "profiles" / "baselines" / "*.json")))
    if not baselines:
        print("gate: no baselines in profiles/baselines (scripts/update-baselines.sh makes them)", file=sys.stderr)
        return 2
    jobs = max(1, int(os.environ.get("GATE_JOBS", "2")))
    tolerance = os.environ.get("GATE_TOLERANCE", "0%")
    start = time.perf_counter()
    worst = 0
    order = sorted(baselines, key=_size_hint, reverse=True)
    with ProcessPoolExecutor(max_workers=min(jobs, len(order)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(gate_one, path, tolerance) for path in order]
        for future in as_completed(futures):
            code, text = future.result()
            print(text, flush=True)
            worst = 2 if 2 in (worst, code) else max(worst, code)
    seconds = round(time.perf_counter() - start)
    if worst == 0:
        print(f"gate: all {len(baselines)} baselines hold ({seconds} s)")
    else:
        print(f"gate: FAILED (exit {worst}) after {seconds} s; if the change is intended: scripts/update-baselines.sh",
              file=sys.stderr)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
