"""Figures for a profile document: optimizer state by key, latency per phase, memory over time.

    paths = write_profile_figures(doc, out_dir, {"sgdsai": Path("samples-sgdsai.csv")})

Each figure is written as PNG and SVG through ``render.figures.save_figure``. Which figures exist
depends on the document:

- ``state-by-key``      always (estimated and measured documents): optimizer state bytes per
                        optimizer, stacked by state key (``momentum_buffer``, ``exp_avg``, ...);
- ``latency``           when at least one run has ``latency_ms``: p50 per phase per optimizer,
                        with min..max whiskers; the whole step and the first step in a panel of
                        their own (the first step allocates the state: it would flatten the rest);
- ``memory-over-time``  when a samples CSV (or frame) exists for at least one run: allocator
                        allocated and reserved and NVML used (CPU: live-tensor bytes) on the left
                        axis, the host process's RSS on the right one; one panel per optimizer, the
                        training phases shaded, the time axis spanning the steps (the model build
                        before them is cut to a short margin) and the start of the measured steps marked.

A samples frame has the columns of the sampler CSV (``sgdsai_cli.measure.sampler.SAMPLE_COLUMNS``):
``t_s``, ``step``, ``phase`` and byte columns; missing or all-empty columns are skipped.
Titles name the model, precision, device and shape; axes carry units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.figures import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    PHASE_COLORS,
    PHASES,
    SKY,
    byte_axis,
    color,
    device_line,
    new_figure,
    save_figure,
)

# (column, label, colour, line style) of the memory-over-time panels' left axis, in this order; the host
# process's RSS goes on a second axis (another memory on CUDA; on the CPU it includes the libraries,
# hundreds of MiB that would flatten the tensors' curve).
MEMORY_SERIES = (
    ("allocated_bytes", "allocated (allocator)", BLUE, "-"),
    ("reserved_bytes", "reserved (allocator)", ORANGE, "--"),
    ("nvml_used_bytes", "used (NVML)", GREEN, "-."),
)
CPU_LABELS = {"allocated_bytes": "live tensors (tracked steps only)"}
SOURCE_WORDS = {"measured": "measured", "fake": "estimate", "meta": "estimate"}
SETUP_MARGIN = 0.08  # of the steps' duration: how much of the model build stays on the time axis


def _legend_below(fig, handles, labels, ncol: int = 4) -> None:
    """One legend for the figure, under the axes: it never covers data."""
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        fig.legend(list(unique.values()), list(unique), loc="outside lower center", ncol=min(ncol, len(unique)),
                   fontsize=8, frameon=False)


def run_label(run: dict[str, Any]) -> str:
    """A run's name in a figure: the optimizer, and its rank for a row of a parallel job ('sgdsai r1')."""
    rank = run.get("rank")
    return str(run.get("optimizer")) + (f" r{rank}" if isinstance(rank, int) else "")


def plot_state_by_key(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Stacked bars: optimizer state bytes per optimizer, one segment per state key."""
    runs = [r for r in doc.get("runs", []) if (r.get("memory") or {}).get("state_bytes_by_key")]
    if not runs:
        return []
    keys = list(dict.fromkeys(k for r in runs for k in r["memory"]["state_bytes_by_key"]))
    totals = [sum(r["memory"]["state_bytes_by_key"].values()) for r in runs]
    scale, unit = byte_axis(max(totals))
    fig, ax = new_figure((max(5.0, 1.4 * len(runs) + 3.0), 4.6))
    labels = [run_label(r) for r in runs]
    bottoms = [0.0] * len(runs)
    for i, key in enumerate(keys):
        values = [r["memory"]["state_bytes_by_key"].get(key, 0) for r in runs]
        heights = [v / scale for v in values]
        small = max(values) < 0.005 * max(totals)  # too thin to see: say so in the legend
        label = f"{key} ({fmt.size(max(values))}, too small to show)" if small else key
        ax.bar(labels, heights, bottom=bottoms, label=label, color=color(i), width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(totals):
        ax.annotate(fmt.size(total), (x, total / scale), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    sources = sorted({SOURCE_WORDS.get(r["memory"].get("source"), "estimate") for r in runs})
    ax.set_ylim(0, max(bottoms) * 1.12)
    ax.set_ylabel(f"optimizer state ({unit})")
    ax.set_xlabel("optimizer")
    ax.set_title(f"Optimizer state by key ({', '.join(sources)})\n{device_line(doc)}", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    _legend_below(fig, handles, names, ncol=3)
    return save_figure(fig, out_dir, "state-by-key")


def _bar_value(v: Any) -> tuple[float, float, float] | None:
    """(p50, down, up) of a latency entry: a {p50, min, max} record or a single number."""
    if isinstance(v, dict) and v.get("p50") is not None:
        p50 = v["p50"]
        lo = v.get("min") if v.get("min") is not None else p50
        hi = v.get("max") if v.get("max") is not None else p50
        return p50, max(0.0, p50 - lo), max(0.0, hi - p50)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v), 0.0, 0.0
    return None


def _latency_bars(ax, runs: list[dict], groups: list[str], names: dict[str, str]) -> None:
    width = 0.8 / max(1, len(runs))
    for j, r in enumerate(runs):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            bar = _bar_value(r["latency_ms"].get(g))
            if bar is not None:
                xs.append(i + (j - (len(runs) - 1) / 2) * width)
                ys.append(bar[0])
                lo.append(bar[1])
                hi.append(bar[2])
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, color=color(j), ecolor="0.2",
               label=f"{run_label(r)} ({r.get('impl') or '?'})")
        for x, y, up in zip(xs, ys, hi, strict=True):  # above the whisker, not on it
            ax.annotate(fmt.ms(y), (x, y + up), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), [names.get(g, g.replace("_", " ")) for g in groups])
    ax.margins(y=0.12)


def plot_latency(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Grouped bars: p50 latency per phase per optimizer (min..max whiskers); whole and first step apart."""
    runs = [r for r in doc.get("runs", []) if r.get("latency_ms")]
    if not runs:
        return []
    phases = [p for p in PHASES if any(_bar_value(r["latency_ms"].get(p)) for r in runs)]
    whole = [g for g in ("step", "first_step") if any(_bar_value(r["latency_ms"].get(g)) for r in runs)]
    panels = [(g, w) for g, w in ((phases, len(phases)), (whole, len(whole) + 0.6)) if g]
    fig, axes = new_figure((max(7.0, 0.6 * len(runs) * (len(phases) + len(whole)) + 3.5), 4.6), 1, len(panels),
                           squeeze=False, gridspec_kw={"width_ratios": [w for _, w in panels]})
    names = {"step": "whole step", "first_step": "first step\n(one run)"}
    for ax, (groups, _) in zip(axes[0], panels, strict=True):
        _latency_bars(ax, runs, groups, names)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("latency (ms): p50 of the measured steps,\nwhiskers min..max")
    axes[0, 0].set_xlabel("phase of a measured step")
    if len(panels) > 1:
        axes[0, -1].set_xlabel("the first step also allocates\nthe optimizer state", fontsize=8)
    fig.suptitle(f"Latency per phase\n{device_line(doc)}", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    return save_figure(fig, out_dir, "latency")


def _phase_spans(frame) -> list[tuple[float, float, str]]:
    """Contiguous (start, end, phase) runs of the samples' phase column (phases with a colour only)."""
    if "phase" not in frame.columns or frame.empty:
        return []
    t = frame["t_s"].tolist()
    ph = frame["phase"].fillna("").astype(str).tolist()
    spans, start = [], 0
    for i in range(1, len(ph) + 1):
        if i == len(ph) or ph[i] != ph[start]:
            if ph[start] in PHASE_COLORS:
                spans.append((t[start], t[i] if i < len(ph) else t[-1], ph[start]))
            start = i
    return spans


def _has(frame, col: str) -> bool:
    return col in frame.columns and bool(frame[col].notna().any())


def _time_window(frame) -> tuple[float, float]:
    """The steps' time range, with a short margin of the setup before them (all of it when no step ran)."""
    t = frame["t_s"]
    if "step" not in frame.columns or not (frame["step"] >= 0).any():
        return float(t.min()), float(t.max())
    first, last = float(t[frame["step"] >= 0].min()), float(t.max())
    return max(float(t.min()), first - SETUP_MARGIN * max(last - first, 1e-3)), last


def _first_measured_step(doc: dict) -> int | None:
    """Index of the first measured step: the first step and the warmup steps come before it."""
    warmup = (doc.get("spec") or {}).get("warmup")
    return None if warmup is None else max(int(warmup), 1)


def _step_spans(doc: dict, frame) -> list[tuple[float, float, str]]:
    """(start, end, label) of the warmup steps and the measured steps, from the samples' step column."""
    first = _first_measured_step(doc)
    if first is None or "step" not in frame.columns:
        return []
    t, step = frame["t_s"], frame["step"]
    warm, measured = t[(step >= 0) & (step < first)], t[step >= first]
    spans = []
    if len(warm):
        spans.append((float(warm.min()), float(measured.min() if len(measured) else warm.max()),
                      "first step and warmup"))
    if len(measured):
        spans.append((float(measured.min()), float(t.max()), "measured steps"))
    return spans


def _resolves_phases(frame) -> bool:
    """Whether the samples are dense enough (3 or more a step) for their phase labels to show the phases."""
    if "step" not in frame.columns or not (frame["step"] >= 0).any():
        return "phase" in frame.columns
    stepped = frame["step"][frame["step"] >= 0]
    return len(stepped) >= 3 * (int(stepped.max()) - int(stepped.min()) + 1)


def _shade(ax, doc: dict, frame) -> None:
    """Phases where the samples resolve them, else the warmup and measured steps; the setup in grey."""
    if _resolves_phases(frame):
        for start, end, phase in _phase_spans(frame):
            ax.axvspan(start, end, color=PHASE_COLORS[phase], alpha=0.18, lw=0, label=phase.replace("_", " "))
        spans = _step_spans(doc, frame)
        if spans and spans[-1][2] == "measured steps":
            ax.axvline(spans[-1][0], color="black", lw=0.9, ls=":", label="first measured step")
        return
    for start, end, phase in _phase_spans(frame):
        if phase == "setup":
            ax.axvspan(start, end, color=PHASE_COLORS[phase], alpha=0.18, lw=0, label="setup")
    for (start, end, label), shade in zip(_step_spans(doc, frame), (SKY, GREEN), strict=False):
        ax.axvspan(start, end, color=shade, alpha=0.18, lw=0, label=label)


def _memory_panel(ax, doc: dict, frame, scales, cpu: bool) -> None:
    (scale, unit, top), (rss_scale, rss_unit, rss_top) = scales
    t0, t1 = _time_window(frame)
    few = len(frame) < 300  # sparse samples: mark each one
    _shade(ax, doc, frame)
    for col, label, line_color, dash in MEMORY_SERIES:
        if _has(frame, col):
            ax.plot(frame["t_s"], frame[col] / scale, color=line_color, ls=dash, lw=1.4,
                    marker="." if few else None, label=CPU_LABELS.get(col, label) if cpu else label)
    ax.set_ylabel(f"{'tensor' if cpu else 'device'} memory ({unit})")
    ax.set_ylim(0, 1.1 * top / scale)
    ax.set_xlim(t0, t1 + 0.01 * max(t1 - t0, 1e-3))
    if _has(frame, "rss_bytes"):
        ax2 = ax.twinx()
        ax2.plot(frame["t_s"], frame["rss_bytes"] / rss_scale, color=GREY, ls=(0, (2, 2)), lw=1.2,
                 label="host process RSS (right axis)")
        ax2.set_ylabel(f"host RSS ({rss_unit})", color="0.35")
        ax2.set_ylim(0, 1.1 * rss_top / rss_scale)


def plot_memory_over_time(doc: dict[str, Any], samples: dict[str, Any], out_dir: Path) -> list[Path]:
    """One panel per optimizer: device memory against time (left), host RSS (right), phases shaded."""
    frames = {name: f for name, f in (samples or {}).items() if f is not None and len(f) > 0 and "t_s" in f}
    if not frames:
        return []
    cpu = str((doc.get("spec") or {}).get("device") or "").startswith("cpu")
    top = max((float(f[c].max()) for f in frames.values() for c, *_ in MEMORY_SERIES if _has(f, c)), default=1.0)
    rss_top = max((float(f["rss_bytes"].max()) for f in frames.values() if _has(f, "rss_bytes")), default=1.0)
    scales = ((*byte_axis(top or 1), top or 1), (*byte_axis(rss_top or 1), rss_top or 1))
    fig, axes = new_figure((9.5, 2.9 * len(frames) + 1.4), len(frames), 1, squeeze=False)
    found: dict[str, Any] = {}
    for ax, (name, frame) in zip(axes[:, 0], frames.items(), strict=True):
        _memory_panel(ax, doc, frame, scales, cpu)
        ax.set_title(name, fontsize=9, loc="left")
        for a in ax.get_shared_x_axes().get_siblings(ax):  # the panel and its RSS twin
            for h, lab in zip(*a.get_legend_handles_labels(), strict=True):
                found.setdefault(lab, h)
    phases = [p.replace("_", " ") for p in ("setup", *PHASES)] + ["first step and warmup", "measured steps"]
    ordered = [lab for lab in phases if lab in found] + [lab for lab in found if lab not in phases]
    axes[-1, 0].set_xlabel("time since the run started (s)")
    sparse = "" if all(_resolves_phases(f) for f in frames.values()) else (
        "\nfewer than 3 samples a step: the steps are shaded, not their phases")
    fig.suptitle(f"Memory over time\n{device_line(doc)}{sparse}", fontsize=10)
    _legend_below(fig, [found[lab] for lab in ordered], ordered, ncol=5)
    return save_figure(fig, out_dir, "memory-over-time")


def samples_beside(doc: dict[str, Any], folder: str | Path) -> dict[str, Path]:
    """optimizer -> ``folder/samples-<optimizer>.csv`` for the document's runs whose CSV is there."""
    from sgdsai_cli.measure.realrun import safe_name

    found = {}
    for r in doc.get("runs", []):
        path = Path(folder) / f"samples-{safe_name(str(r.get('optimizer')))}.csv"
        if path.is_file():
            found[str(r["optimizer"])] = path
    return found


def read_sample_frames(samples_csv: dict[str, Path]) -> dict[str, Any]:
    """optimizer -> samples frame for each CSV that reads; an unreadable CSV is left out."""
    from sgdsai_cli.measure.sampler import read_samples

    frames = {}
    for name, path in (samples_csv or {}).items():
        try:
            frames[name] = read_samples(path)
        except (OSError, ValueError):
            continue
    return frames


def profile_plots(doc: dict[str, Any], out_dir: Path, samples: dict[str, Any] | None = None) -> list[Path]:
    """Every figure the document and the samples frames allow, in ``out_dir``; return the paths.

    ``samples`` maps optimizer name -> pandas DataFrame of sampler rows (see the module docstring).
    An estimated document gets ``state-by-key`` only.
    """
    out = Path(out_dir)
    paths = plot_state_by_key(doc, out) + plot_latency(doc, out)
    if samples:
        paths += plot_memory_over_time(doc, samples, out)
    return paths


def write_profile_figures(doc: dict[str, Any], out_dir: str | Path,
                          samples_csv: dict[str, Path] | None = None) -> list[Path]:
    """Every figure of a profile: ``profile_plots`` with the samples read from ``samples_csv``
    (optimizer -> CSV path, as the real run writes them); return the written paths."""
    return profile_plots(doc, Path(out_dir), read_sample_frames(samples_csv or {}))
