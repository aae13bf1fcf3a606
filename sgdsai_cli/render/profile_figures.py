"""Figures for a profile document: optimizer state by key, latency per phase, memory over time.

    paths = profile_plots(doc, out_dir, samples={"sgdsai": frame, "adamw": frame})

Each figure is written as PNG and SVG (matplotlib, Agg backend, imported lazily so that
``import sgdsai_cli.render.profile_figures`` costs nothing). Which figures exist depends on the document:

- ``state-by-key``      always (meta, fake and measured documents): optimizer state bytes per
                        optimizer, stacked by state key (``momentum_buffer``, ``exp_avg``, ...);
- ``latency``           when at least one run has ``latency_ms``: p50 per phase per optimizer,
                        with min..max whiskers, and the first optimizer step beside them;
- ``memory-over-time``  when ``samples`` holds a frame for at least one run: allocator allocated
                        and reserved and NVML used (CPU: live-tensor bytes) on the left axis, the
                        host process's RSS on the right one; one panel per optimizer, the
                        training phases shaded.

A samples frame has the columns of the sampler CSV (``sgdsai_cli.measure.sampler.SAMPLE_COLUMNS``):
``t_s``, ``phase`` and byte columns such as ``allocated_bytes``, ``reserved_bytes``,
``nvml_used_bytes``, ``rss_bytes``; missing columns or all-empty ones are skipped.
Titles and axes name the model, precision, device and units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GiB = 1024**3
MiB = 1024**2

PHASES = ("forward", "backward", "optimizer_step", "zero_grad")
PHASE_COLORS = {
    "forward": "#4c72b0",
    "backward": "#dd8452",
    "optimizer_step": "#55a868",
    "zero_grad": "#c44e52",
    "first_step": "#8c8c8c",
}
# (column, label) of device memory drawn in the memory-over-time panels, in this order;
# the host process's RSS goes on a second axis (it is another memory on CUDA, and on the CPU
# it includes the libraries, hundreds of MiB that would flatten the tensors' curve).
MEMORY_SERIES = (
    ("allocated_bytes", "allocated (allocator)"),
    ("reserved_bytes", "reserved (allocator)"),
    ("nvml_used_bytes", "used (NVML)"),
)
CPU_LABELS = {"allocated_bytes": "live tensors (tracked steps)"}


def _title(doc: dict[str, Any], what: str) -> str:
    spec = doc.get("spec", {})
    device = (doc.get("environment", {}).get("device") or {})
    dev = spec.get("device", device.get("type", "?"))
    name = device.get("name")
    if name and name != dev:
        dev = f"{dev} ({name})"
    shape = f"batch {spec.get('batch_size', '?')}"
    if spec.get("seq_len") is not None:
        shape += f" x seq {spec.get('seq_len')}"
    return f"{what}\n{spec.get('model', '?')}, {spec.get('precision', '?')}, {dev}, {shape}"


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    """Write PNG and SVG; return both paths."""
    from sgdsai_cli.files import write_text_atomic

    paths = []
    for ext in ("png", "svg"):
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=120, bbox_inches="tight")
        paths.append(write_text_atomic(out_dir / f"{stem}.{ext}", buf.getvalue()))
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _bytes_scale(max_bytes: float) -> tuple[float, str]:
    return (GiB, "GiB") if max_bytes >= GiB else (MiB, "MiB")


def plot_state_by_key(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Stacked bars: optimizer state bytes per optimizer, one segment per state key."""
    runs = [r for r in doc.get("runs", []) if (r.get("memory") or {}).get("state_bytes_by_key")]
    if not runs:
        return []
    plt = _pyplot()
    keys: list[str] = []
    for r in runs:
        for k in r["memory"]["state_bytes_by_key"]:
            if k not in keys:
                keys.append(k)
    top = max(sum(r["memory"]["state_bytes_by_key"].values()) for r in runs)
    scale, unit = _bytes_scale(top)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(runs) + 2.5), 4.5))
    labels = [r["optimizer"] for r in runs]
    bottoms = [0.0] * len(runs)
    cmap = plt.get_cmap("tab10")
    for i, key in enumerate(keys):
        heights = [r["memory"]["state_bytes_by_key"].get(key, 0) / scale for r in runs]
        ax.bar(labels, heights, bottom=bottoms, label=key, color=cmap(i % 10))
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(bottoms):
        ax.annotate(f"{total:,.2f}", (x, total), ha="center", va="bottom", fontsize=8)
    source = sorted({(r["memory"].get("source") or "?") for r in runs})
    ax.set_ylabel(f"optimizer state ({unit})")
    ax.set_xlabel("optimizer")
    ax.set_title(_title(doc, f"Optimizer state by key (source: {', '.join(source)})"), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = _save(fig, out_dir, "state-by-key")
    plt.close(fig)
    return paths


def plot_latency(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Grouped bars: p50 latency per phase per optimizer (min..max whiskers); first step apart."""
    runs = [r for r in doc.get("runs", []) if r.get("latency_ms")]
    if not runs:
        return []
    plt = _pyplot()
    phases = [p for p in PHASES if any(isinstance(r["latency_ms"].get(p), dict) for r in runs)]
    has_first = any(r["latency_ms"].get("first_step") is not None for r in runs)
    groups = phases + (["first_step"] if has_first else [])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * len(runs) / 2 + 3), 4.5))
    width = 0.8 / max(1, len(runs))
    cmap = plt.get_cmap("tab10")
    for j, r in enumerate(runs):
        lat = r["latency_ms"]
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            v = lat.get(g)
            if isinstance(v, dict) and v.get("p50") is not None:
                p50 = v["p50"]
                xs.append(i + (j - (len(runs) - 1) / 2) * width)
                ys.append(p50)
                lo.append(max(0.0, p50 - (v.get("min") if v.get("min") is not None else p50)))
                hi.append(max(0.0, (v.get("max") if v.get("max") is not None else p50) - p50))
            elif isinstance(v, (int, float)):
                xs.append(i + (j - (len(runs) - 1) / 2) * width)
                ys.append(v)
                lo.append(0.0)
                hi.append(0.0)
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=f"{r['optimizer']} ({r.get('impl') or '?'})",
               color=cmap(j % 10))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.replace("_", " ") for g in groups])
    ax.set_ylabel("latency (ms), p50; whiskers min..max")
    ax.set_xlabel("phase (first step: state allocation and g-SNR, one sample)")
    ax.set_title(_title(doc, "Latency per phase"), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = _save(fig, out_dir, "latency")
    plt.close(fig)
    return paths


def _phase_spans(frame) -> list[tuple[float, float, str]]:
    """Contiguous (start, end, phase) runs of the samples' phase column."""
    if "phase" not in frame.columns or frame.empty:
        return []
    spans = []
    t = frame["t_s"].tolist()
    ph = frame["phase"].fillna("").astype(str).tolist()
    start = 0
    for i in range(1, len(ph) + 1):
        if i == len(ph) or ph[i] != ph[start]:
            end_t = t[i] if i < len(ph) else t[-1]
            if ph[start] in PHASE_COLORS:
                spans.append((t[start], end_t, ph[start]))
            start = i
    return spans


def plot_memory_over_time(doc: dict[str, Any], samples: dict[str, Any], out_dir: Path) -> list[Path]:
    """One panel per optimizer: device memory against time (left), host RSS (right), phases shaded."""
    frames = {name: f for name, f in (samples or {}).items() if f is not None and len(f) > 0 and "t_s" in f}
    if not frames:
        return []
    plt = _pyplot()
    cpu = (doc.get("spec", {}).get("device") or "").startswith("cpu")

    def has(f, col):
        return col in f.columns and f[col].notna().any()

    top = max((float(f[c].max()) for f in frames.values() for c, _ in MEMORY_SERIES if has(f, c)), default=1.0)
    scale, unit = _bytes_scale(top or 1)
    rss_top = max((float(f["rss_bytes"].max()) for f in frames.values() if has(f, "rss_bytes")), default=1.0)
    rss_scale, rss_unit = _bytes_scale(rss_top or 1)
    fig, axes = plt.subplots(len(frames), 1, figsize=(9, 2.8 * len(frames) + 0.8), sharex=False, squeeze=False)
    for ax, (name, f) in zip(axes[:, 0], frames.items(), strict=True):
        shaded = set()
        for t0, t1, phase in _phase_spans(f):
            ax.axvspan(t0, t1, color=PHASE_COLORS[phase], alpha=0.15, lw=0,
                       label=phase.replace("_", " ") if phase not in shaded else None)
            shaded.add(phase)
        for col, label in MEMORY_SERIES:
            if has(f, col):
                ax.plot(f["t_s"], f[col] / scale, label=CPU_LABELS.get(col, label) if cpu else label, lw=1.3)
        ax.set_ylabel(f"{'tensor' if cpu else 'device'} memory ({unit})")
        ax.set_ylim(bottom=0)
        ax.set_title(name, fontsize=9, loc="left")
        handles, labels = ax.get_legend_handles_labels()
        if has(f, "rss_bytes"):
            ax2 = ax.twinx()
            line = ax2.plot(f["t_s"], f["rss_bytes"] / rss_scale, color="0.45", ls="--", lw=1.0,
                            label="host process RSS (right)")
            ax2.set_ylabel(f"host RSS ({rss_unit})", color="0.35")
            ax2.set_ylim(bottom=0)
            handles, labels = handles + line, labels + ["host process RSS (right)"]
        ax.legend(handles, labels, fontsize=7, loc="upper left", ncol=3)
    axes[-1, 0].set_xlabel("time since run start (s)")
    fig.suptitle(_title(doc, "Memory over time"), fontsize=10)
    fig.tight_layout()
    paths = _save(fig, out_dir, "memory-over-time")
    plt.close(fig)
    return paths


def profile_plots(doc: dict[str, Any], out_dir: Path, samples: dict[str, Any] | None = None) -> list[Path]:
    """Write every figure the document (and samples) allow into ``out_dir``; return the paths.

    ``samples`` maps optimizer name -> pandas DataFrame of sampler rows (see module docstring).
    Works for meta documents too: then only ``state-by-key`` is drawn.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    paths += plot_state_by_key(doc, out_dir)
    paths += plot_latency(doc, out_dir)
    if samples:
        paths += plot_memory_over_time(doc, samples, out_dir)
    return paths
