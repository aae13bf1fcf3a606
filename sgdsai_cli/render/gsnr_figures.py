"""Figures for a g-SNR document (matplotlib, Agg backend), each written as PNG and SVG.

    paths = gsnr_plots(doc, "reports/gsnr-gpt2")

    gsnr_by_type      g-SNR at initialisation of every tensor, grouped by block type (log scale)
    gsnr_by_layer     g-SNR against layer index, one line per block type (median of its tensors)
    gsnr_over_steps   g-SNR of each tensor at every measured step, and its change relative to step 0
    gsnr_vs_sqrt_n    g-SNR against sqrt(numel - 1), with the line y = x (the lower bound)

Degenerate tensors (g-SNR fixed at 1, or pending for an all-zero gradient) are left out.
"""

from __future__ import annotations

import io
import math
import os
import statistics
from pathlib import Path

from sgdsai_cli.files import write_text_atomic

FIGURES = ("gsnr_by_type", "gsnr_by_layer", "gsnr_over_steps", "gsnr_vs_sqrt_n")
FORMATS = ("png", "svg")


def _subtitle(doc: dict) -> str:
    spec = doc.get("spec", {})
    device = (doc.get("environment", {}).get("device") or {}).get("name") or spec.get("device")
    data = doc.get("data", {})
    what = "bytes of " + str(data.get("source")) if data.get("kind") == "text" else "synthetic images"
    return (f"{spec.get('model')} | {spec.get('precision')} | {spec.get('device')} ({device}) | "
            f"{spec.get('optimizer')} lr {doc.get('training', {}).get('lr')} | batch {spec.get('batch_size')}"
            + (f" x {spec.get('seq_len')} tokens" if spec.get("seq_len") else "") + f" | {what}")


def _colors(kinds):
    import matplotlib

    from sgdsai_cli.models import BLOCK_TYPES

    cmap = matplotlib.colormaps["tab20"]
    order = list(BLOCK_TYPES)
    return {k: cmap((order.index(k) if k in order else len(order)) % 20) for k in kinds}


def _good(doc: dict) -> list[dict]:
    return [t for t in doc.get("tensors", []) if t.get("degenerate") is None and t.get("gsnr_init")]


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight",
                    metadata={"Date": None} if fmt == "svg" else None)
        paths.append(write_text_atomic(out_dir / f"{stem}.{fmt}", buf.getvalue()))
    return paths


def _by_type(doc, plt):
    tensors = _good(doc)
    kinds = [row["block_type"] for row in doc.get("summary", []) if row.get("gsnr_median") is not None]
    colors = _colors(kinds)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(kinds) + 2), 4.8))
    for i, kind in enumerate(kinds):
        ys = [t["gsnr_init"] for t in tensors if t["block_type"] == kind]
        xs = [i + 0.25 * (((j * 0.618) % 1.0) - 0.5) for j in range(len(ys))]  # deterministic jitter
        ax.scatter(xs, ys, s=14, color=colors[kind], alpha=0.8, zorder=3)
        ax.hlines(statistics.median(ys), i - 0.3, i + 0.3, color="black", linewidth=1.5, zorder=4)
    ax.set_xticks(range(len(kinds)), kinds, rotation=35, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("g-SNR at step 0 (dimensionless, log scale)")
    ax.set_xlabel("block type (black bar: median)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.set_title("g-SNR by block type\n" + _subtitle(doc), fontsize=9)
    return fig


def _by_layer(doc, plt):
    groups: dict[str, dict[int, list[float]]] = {}
    for t in _good(doc):
        if t.get("layer") is not None:
            groups.setdefault(t["block_type"], {}).setdefault(t["layer"], []).append(t["gsnr_init"])
    colors = _colors(groups)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for kind, layers in groups.items():
        xs = sorted(layers)
        ys = [statistics.median(layers[x]) for x in xs]
        ax.plot(xs, ys, marker="o", markersize=3, color=colors[kind], label=kind)
    ax.set_yscale("log")
    ax.set_xlabel("layer index")
    ax.set_ylabel("g-SNR at step 0 (dimensionless, log scale)")
    if groups:
        ax.legend(fontsize=7, ncol=2, loc="best")
        top = max(max(layers) for layers in groups.values())
        ax.set_xticks(range(0, top + 1, max(1, (top + 1) // 12)))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("g-SNR against layer index (median per block type and layer)\n" + _subtitle(doc), fontsize=9)
    return fig


def _over_steps(doc, plt):
    tensors = _good(doc)
    colors = _colors({t["block_type"] for t in tensors})
    fig, (ax, ax_rel) = plt.subplots(1, 2, figsize=(11, 4.8))
    seen = set()
    for t in tensors:
        pts = [(int(k), v) for k, v in t["gsnr_by_step"].items() if v is not None]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=False)
        label = t["block_type"] if t["block_type"] not in seen else None
        seen.add(t["block_type"])
        ax.plot(xs, ys, marker=".", linewidth=0.8, alpha=0.7, color=colors[t["block_type"]], label=label)
        first = t["gsnr_by_step"].get("0")
        if first:
            ax_rel.plot(xs, [100.0 * (y / first - 1.0) for y in ys], marker=".", linewidth=0.8, alpha=0.7,
                        color=colors[t["block_type"]])
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("g-SNR of that step's gradient (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    if seen:
        ax.legend(fontsize=7, ncol=2, loc="best")
    from matplotlib.ticker import MaxNLocator

    for a in (ax, ax_rel):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rel.set_xlabel("training step")
    ax_rel.set_ylabel("change from step 0 (%)")
    ax_rel.axhline(0.0, color="black", linewidth=0.8)
    ax_rel.grid(True, alpha=0.3)
    fig.suptitle("g-SNR over training, one line per tensor\n" + _subtitle(doc), fontsize=9)
    return fig


def _vs_sqrt_n(doc, plt):
    tensors = [t for t in _good(doc) if t["numel"] > 1]
    colors = _colors({t["block_type"] for t in tensors})
    fig, ax = plt.subplots(figsize=(6.8, 5.2))
    for kind in sorted(colors):
        ts = [t for t in tensors if t["block_type"] == kind]
        ax.scatter([math.sqrt(t["numel"] - 1) for t in ts], [t["gsnr_init"] for t in ts], s=16,
                   color=colors[kind], label=kind, alpha=0.8, zorder=3)
    if tensors:
        lo = min(math.sqrt(t["numel"] - 1) for t in tensors)
        hi = max(max(math.sqrt(t["numel"] - 1) for t in tensors), max(t["gsnr_init"] for t in tensors))
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, linestyle="--",
                label="y = x (lower bound)", zorder=2)
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sqrt(numel - 1)  (numel: elements in the tensor)")
    ax.set_ylabel("g-SNR at step 0 (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("g-SNR against sqrt(numel - 1)\n" + _subtitle(doc), fontsize=9)
    return fig


def gsnr_plots(doc: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write the four figures (PNG and SVG) into ``out_dir`` (created if missing); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for stem, draw in zip(FIGURES, (_by_type, _by_layer, _over_steps, _vs_sqrt_n), strict=True):
        fig = draw(doc, plt)
        try:
            paths += _save(fig, out, stem)
        finally:
            plt.close(fig)
    return paths
