"""Figures: which ones a document allows, both formats, titles that name model, precision, device."""

from __future__ import annotations

import pandas as pd
import pytest

from sgdsai_cli.render.profile_figures import profile_plots


def doc(device="cuda", latency=True, runs=("sgdsai", "adamw")):
    by_key = {"sgdsai": {"momentum_buffer": 4 << 30, "gsnr": 1164},
              "adamw": {"exp_avg": 4 << 30, "exp_avg_sq": 4 << 30, "step": 1164}}
    lat = {"forward": {"p50": 10.0, "p90": 11.0, "min": 9.5, "max": 12.0, "n": 10},
           "backward": {"p50": 20.0, "p90": 21.0, "min": 19.0, "max": 22.0, "n": 10},
           "optimizer_step": {"p50": 3.0, "p90": 3.5, "min": 2.9, "max": 4.0, "n": 10},
           "zero_grad": {"p50": 0.1, "p90": 0.1, "min": 0.1, "max": 0.2, "n": 10},
           "first_step": 40.0}
    return {
        "spec": {"model": "gpt2-xl", "precision": "bf16", "device": device, "batch_size": 4, "seq_len": 1024},
        "environment": {"device": {"type": device, "name": "NVIDIA H100 80GB HBM3"}},
        "runs": [{"optimizer": o, "impl": "foreach", "status": "ok",
                  "memory": {"source": "measured" if latency else "meta", "state_bytes_by_key": by_key[o]},
                  "latency_ms": lat if latency else None} for o in runs],
    }


def samples(n=50):
    phases = (["forward"] * 10 + ["backward"] * 20 + ["optimizer_step"] * 15 + ["zero_grad"] * 5) * (n // 50)
    return pd.DataFrame({
        "t_s": [i * 0.01 for i in range(len(phases))],
        "step": [0] * len(phases),
        "phase": phases,
        "allocated_bytes": [(5 << 30) + i * (1 << 24) for i in range(len(phases))],
        "reserved_bytes": [8 << 30] * len(phases),
        "nvml_used_bytes": [(9 << 30)] * len(phases),
        "rss_bytes": [1 << 30] * len(phases),
        "power_w": [float("nan")] * len(phases),
    })


@pytest.mark.parametrize(
    "document, frames, stems",
    [
        (doc(latency=False), None, ["state-by-key"]),  # a meta document: state only
        (doc(), None, ["state-by-key", "latency"]),
        (doc(), {"sgdsai": samples(), "adamw": samples(100)}, ["state-by-key", "latency", "memory-over-time"]),
        (doc(), {"sgdsai": samples().iloc[0:0]}, ["state-by-key", "latency"]),  # empty samples: no panel
    ],
)
def test_which_figures(tmp_path, document, frames, stems):
    paths = profile_plots(document, tmp_path, frames)
    assert [p.name for p in paths] == [f"{s}.{e}" for s in stems for e in ("png", "svg")]
    for p in paths:
        assert p.parent == tmp_path and p.stat().st_size > 2000
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_png_and_svg_content(tmp_path):
    paths = {p.name: p for p in profile_plots(doc(), tmp_path, {"sgdsai": samples()})}
    assert paths["latency.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("state-by-key.svg", "latency.svg", "memory-over-time.svg"):
        svg = paths[name].read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        # titles name the model, precision and device; axes carry units
        assert "gpt2-xl, bf16, cuda (NVIDIA H100 80GB HBM3)" in svg
    assert "optimizer state (GiB)" in paths["state-by-key.svg"].read_text()
    assert "latency (ms)" in paths["latency.svg"].read_text()
    mem = paths["memory-over-time.svg"].read_text()
    assert "memory (GiB)" in mem and "time since the run started (s)" in mem and "used (NVML)" in mem


def test_no_runs_no_figures(tmp_path):
    assert profile_plots({"spec": {}, "runs": []}, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_failed_runs_are_left_out(tmp_path):
    d = doc()
    d["runs"].append({"optimizer": "adamw-fused", "status": "oom", "memory": None, "latency_ms": None})
    paths = profile_plots(d, tmp_path)
    assert [p.name for p in paths] == ["state-by-key.png", "state-by-key.svg", "latency.png", "latency.svg"]
