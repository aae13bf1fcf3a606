"""The tool's own speed: wall seconds of its slow commands, medians of several runs, optionally side by side.

    .venv/bin/python benchmarks/tool_speed.py                       # this tree, 3 runs each
    .venv/bin/python benchmarks/tool_speed.py --against /tmp/old    # and a checkout of another commit, interleaved

Each command runs as a fresh process (``python -m sgdsai_cli ...``: the import of torch is part of what
a user waits for) in the tree measured (its working folder and ``PYTHONPATH``, ahead of an installed
package), twice over: "cold", with the trace cache off (``SGDSAI_TRACE_CACHE=off``: every trace runs, as
on a first run or after an edit of the sources), and "warm", with a cache folder of its own that one
untimed run filled (the same command run again; a tree without the cache traces again). With
``--against`` the two trees run alternately, so both see the same load, and the table gives the ratio
(this tree / the other). Timings on a shared machine measure its load too: run it on a quiet one and
read the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "main job (profile llama2-7b fp32)": ["profile", "--model", "llama2-7b", "--precision", "fp32"],
    "plan llama2-7b, six GPUs": ["plan", "--model", "llama2-7b"],
    "unknown model error": ["profile", "--model", "no-such-model"],
}


def wall_seconds(tree: Path, args: list[str], env: dict[str, str]) -> float:
    env = {**os.environ, **env, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sgdsai_cli", *args], env=env, cwd=tree, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)  # cwd: the tree's package, not an installed one
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--against", type=Path, default=None, help="a checkout of another commit")
    args = parser.parse_args()
    trees = [ROOT] + ([args.against.resolve()] if args.against else [])
    print(f"{'command':46} " + " ".join(f"{str(t)[-18:]:>18}" for t in trees) + ("   ratio" if args.against else ""))
    with tempfile.TemporaryDirectory(prefix="sgdsai-speed-") as tmp:
        for name, cmd in COMMANDS.items():
            for mode in ("cold", "warm"):
                envs = {t: ({"SGDSAI_TRACE_CACHE": "off"} if mode == "cold" else
                            {"SGDSAI_TRACE_CACHE": "on", "SGDSAI_CACHE_DIR": f"{tmp}/{i}-{name}"})
                        for i, t in enumerate(trees)}
                if mode == "warm":
                    for tree in trees:
                        wall_seconds(tree, cmd, envs[tree])  # fills the cache, untimed
                times: dict[Path, list[float]] = {t: [] for t in trees}
                for _ in range(args.runs):
                    for tree in trees:
                        times[tree].append(wall_seconds(tree, cmd, envs[tree]))
                medians = [statistics.median(times[t]) for t in trees]
                ratio = f"   {medians[0] / medians[1]:.2f}" if args.against else ""
                print(f"{name + ', ' + mode:46} " + " ".join(f"{m:17.2f}s" for m in medians) + ratio, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
