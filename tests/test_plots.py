"""Figures: which ones a document allows, both formats, titles that name model, precision, device; the shared
saver and palette; the plan and g-SNR figures."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from sgdsai_cli.render import figures, gsnr_figures, plan_figures, profile_figures
from sgdsai_cli.render.profile_figures import profile_plots, write_profile_figures


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


# --------------------------------------------------------------------------------------------------
# the shared saver and palette, the figure entry points the CLI calls

EXAMPLE_PLAN = Path(__file__).resolve().parent.parent / "reports" / "example" / "inputs" / "plan-llama2-7b.json"


def test_palette_and_line_styles_are_distinct():
    assert len(set(figures.PALETTE)) == len(figures.PALETTE) >= 8
    styles = [figures.line_style(i) for i in range(20)]
    keys = {(s["color"], s["marker"], s["linestyle"]) for s in styles}
    assert len(keys) == 20  # every series differs from every other in colour, marker or dash
    assert all(s["marker"] != t["marker"] for s, t in zip(styles, styles[1:], strict=False))  # neighbours too


def test_figures_leave_the_global_backend_alone(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("matplotlib.use() called by library code")

    monkeypatch.setattr(matplotlib, "use", refuse)
    backend = matplotlib.rcParams._get_backend_or_none()
    profile_plots(doc(), tmp_path / "p", {"sgdsai": samples()})
    plan_figures.write_plan_figures(json.loads(EXAMPLE_PLAN.read_text()), tmp_path / "plan")
    assert matplotlib.rcParams._get_backend_or_none() == backend


def _captured(monkeypatch, module) -> list:
    """Figures that ``module`` would save, kept for inspection (nothing is written)."""
    seen = []

    def keep(fig, out_dir, stem):
        seen.append((stem, fig))
        return [Path(out_dir) / f"{stem}.png"]

    monkeypatch.setattr(module, "save_figure", keep)
    return seen


def test_memory_over_time_spans_every_step_and_keeps_the_legend_off_the_data(monkeypatch, tmp_path):
    setup = pd.DataFrame({"t_s": [i * 0.5 for i in range(20)], "step": [-1] * 20, "phase": ["setup"] * 20,
                          "allocated_bytes": [1 << 30] * 20, "rss_bytes": [2 << 30] * 20})
    steps = samples(100).assign(t_s=lambda f: 10.0 + f["t_s"], step=lambda f: f.index // 25)
    seen = _captured(monkeypatch, profile_figures)
    profile_figures.plot_memory_over_time({**doc(), "spec": {**doc()["spec"], "warmup": 2}},
                                          {"sgdsai": pd.concat([setup, steps], ignore_index=True)}, tmp_path)
    (stem, fig), = seen
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo <= steps["t_s"].min() and hi >= steps["t_s"].max()  # every step is on the axis
    assert lo > 5.0  # the 10 s of setup are cut to a margin, not most of the width
    assert all(a.get_legend() is None for a in fig.axes) and len(fig.legends) == 1  # one legend, outside
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:5] == ["setup", "forward", "backward", "optimizer step", "zero grad"]
    assert "first measured step" in labels


def test_sparse_samples_shade_steps_not_phases(monkeypatch, tmp_path):
    sparse = pd.DataFrame({"t_s": [0.0, 0.01, 0.02, 0.03], "step": [-1, 0, 3, 7],
                           "phase": ["setup", "forward", "backward", "idle"],
                           "allocated_bytes": [0, 1 << 20, 2 << 20, 3 << 20]})
    seen = _captured(monkeypatch, profile_figures)
    profile_figures.plot_memory_over_time({**doc(device="cpu"), "spec": {**doc()["spec"], "device": "cpu",
                                                                        "warmup": 3}}, {"sgdsai": sparse}, tmp_path)
    (_, fig), = seen
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "first step and warmup" in labels and "measured steps" in labels and "forward" not in labels
    assert "fewer than 3 samples a step" in fig._suptitle.get_text()


def test_write_profile_figures_reads_the_samples_csvs(tmp_path):
    good, bad = tmp_path / "samples-sgdsai.csv", tmp_path / "samples-adamw.csv"
    samples().to_csv(good, index=False)
    bad.write_text("")  # an empty CSV is left out, not an error
    paths = write_profile_figures(doc(), tmp_path / "figs", {"sgdsai": good, "adamw": bad, "missing": tmp_path / "x"})
    assert [p.name for p in paths if p.suffix == ".png"] == ["state-by-key.png", "latency.png", "memory-over-time.png"]
    assert profile_figures.samples_beside(doc(), tmp_path) == {"sgdsai": good, "adamw": bad}


@pytest.mark.parametrize(
    ("model", "stem"),
    [("llama2-7b", "plan-llama2-7b"), ("/models/my-llama/config.json", "plan-my-llama"), ("x/tiny.json", "plan-tiny")],
)
def test_plan_figure_names(model, stem):
    assert plan_figures.figure_stem({"spec": {"model": model}}, "bf16") == f"{stem}-bf16"


def test_plan_figures_one_per_precision_with_every_card(tmp_path):
    plan = json.loads(EXAMPLE_PLAN.read_text())
    paths = plan_figures.write_plan_figures(plan, tmp_path)
    precisions = list(dict.fromkeys(r["precision"] for r in plan["rows"]))
    assert [p.name for p in paths] == [f"plan-llama2-7b-{pr}.{ext}" for pr in precisions for ext in ("png", "svg")]
    svg = paths[1].read_text()
    assert "(estimate)" in svg and "fake" not in svg
    for label in {r["gpu_label"] for r in plan["rows"]}:
        assert label in svg


def test_spread_labels_keep_their_distance():
    assert plan_figures._spread([10.0, 10.2, 10.3, 50.0], 1.0) == [10.0, 11.0, 12.0, 50.0]


def _gsnr_doc(steps):
    tensors = [{"name": f"h.{i}.{kind}", "block_type": kind, "layer": i, "numel": 4097, "degenerate": None,
                "gsnr_init": 64.0 + i, "gsnr_by_step": {str(s): 64.0 + i + s / 100 for s in steps}}
               for i in range(2) for kind in ("mlp_up", "mlp_down", "norm", "bias")]
    return {"spec": {"model": "tiny-gpt2", "precision": "fp32", "device": "cpu", "optimizer": "sgdsai",
                     "batch_size": 4, "seq_len": 128, "steps": steps},
            "training": {"lr": 1e-5}, "data": {"kind": "text", "source": "test"}, "tensors": tensors,
            "summary": [{"block_type": k, "gsnr_median": 64.0} for k in ("mlp_up", "mlp_down", "norm", "bias")]}


@pytest.mark.parametrize(("steps", "ticks"),
                         [([0, 10, 50], [0, 10, 50]), (list(range(30)), list(range(0, 30, 3)) + [29])])
def test_gsnr_over_steps_is_ticked_at_the_measured_steps(steps, ticks):
    fig = gsnr_figures._over_steps(_gsnr_doc(steps))
    assert [int(t) for t in fig.axes[0].get_xticks()] == ticks
    assert len(ticks) <= gsnr_figures.MAX_STEP_TICKS + 1


def test_gsnr_block_types_keep_one_distinct_style_in_every_figure():
    d = _gsnr_doc([0, 10])
    styles = {}
    for draw in (gsnr_figures._by_layer, gsnr_figures._over_steps):
        fig = draw(d)
        for line in fig.axes[0].get_lines():
            if not line.get_label().startswith("_"):
                styles.setdefault(line.get_label(), set()).add((line.get_color(), line.get_marker()))
    assert set(styles) == {"mlp_up", "mlp_down", "norm", "bias"}
    assert all(len(s) == 1 for s in styles.values())  # the same style in both figures
    assert len({next(iter(s)) for s in styles.values()}) == 4  # mlp_up and mlp_down differ
