"""Figures for a g-SNR document, each written as PNG and SVG through ``render.figures.save_figure``.

    paths = gsnr_plots(doc, "reports/gsnr-gpt2")

    gsnr_by_type      g-SNR at initialisation of every tensor, grouped by block type (log scale)
    gsnr_by_layer     g-SNR against layer index, one line per block type (median of its tensors)
    gsnr_over_steps   g-SNR of each tensor at every measured step, and its change relative to step 0;
                      the step axis is ticked at the measured steps
    gsnr_vs_sqrt_n    g-SNR against sqrt(numel - 1), with the line y = x (the lower bound)

A block type keeps its colour and marker in all four figures (the palette and markers of
``render.figures``, assigned in ``models.BLOCK_TYPES`` order among the types the document has), so
lines that coincide still show both markers. Degenerate tensors (g-SNR fixed at 1, or pending for an
all-zero gradient) are left out.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.figures import BLACK, line_style, marker_style, new_figure, save_figure

FIGURES = ("gsnr_by_type", "gsnr_by_layer", "gsnr_over_steps", "gsnr_vs_sqrt_n")
MAX_STEP_TICKS = 12  # more measured steps than this: every k-th is labelled


def _subtitle(doc: dict) -> str:
    spec = doc.get("spec", {})
    device = (doc.get("environment", {}).get("device") or {}).get("name") or spec.get("device")
    data = doc.get("data", {})
    what = "bytes of " + str(data.get("source")) if data.get("kind") == "text" else "synthetic images"
    lr = (doc.get("training") or {}).get("lr")
    return (f"{spec.get('model')} | {spec.get('precision')} | {spec.get('device')} ({device}) | "
            f"{spec.get('optimizer')} lr {fmt.number(lr)} | batch {spec.get('batch_size')}"
            + (f" x {spec.get('seq_len')} tokens" if spec.get("seq_len") else "") + f" | {what}")


def _good(doc: dict) -> list[dict]:
    return [t for t in doc.get("tensors", []) if t.get("degenerate") is None and t.get("gsnr_init")]


def _style_index(doc: dict) -> dict[str, int]:
    """Block type -> its series index, the same in every figure of the document."""
    from sgdsai_cli.models import BLOCK_TYPES

    kinds = {t["block_type"] for t in _good(doc)}
    order = [k for k in BLOCK_TYPES if k in kinds] + sorted(kinds - set(BLOCK_TYPES))
    return {k: i for i, k in enumerate(order)}


def _legend_below(fig, ax, ncol: int = 4) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(handles)), fontsize=8,
                   frameon=False)


def _by_type(doc):
    tensors = _good(doc)
    styles = _style_index(doc)
    kinds = [row["block_type"] for row in doc.get("summary", [])
             if row.get("gsnr_median") is not None and row["block_type"] in styles]
    fig, ax = new_figure((max(6.0, 0.9 * len(kinds) + 2), 4.8))
    for i, kind in enumerate(kinds):
        ys = [t["gsnr_init"] for t in tensors if t["block_type"] == kind]
        xs = [i + 0.25 * (((j * 0.618) % 1.0) - 0.5) for j in range(len(ys))]  # deterministic jitter
        ax.scatter(xs, ys, s=18, alpha=0.85, zorder=3, **marker_style(styles[kind]))
        ax.hlines(statistics.median(ys), i - 0.3, i + 0.3, color=BLACK, linewidth=1.5, zorder=4)
    ax.set_xticks(range(len(kinds)), kinds, rotation=35, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("g-SNR at step 0 (dimensionless, log scale)")
    ax.set_xlabel("block type (black bar: median)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.set_title("g-SNR by block type\n" + _subtitle(doc), fontsize=9)
    return fig


def _by_layer(doc):
    groups: dict[str, dict[int, list[float]]] = {}
    for t in _good(doc):
        if t.get("layer") is not None:
            groups.setdefault(t["block_type"], {}).setdefault(t["layer"], []).append(t["gsnr_init"])
    styles = _style_index(doc)
    fig, ax = new_figure((7.5, 5.2))
    for kind in sorted(groups, key=styles.__getitem__):
        xs = sorted(groups[kind])
        ax.plot(xs, [statistics.median(groups[kind][x]) for x in xs], label=kind, **line_style(styles[kind]))
    ax.set_yscale("log")
    ax.set_xlabel("layer index")
    ax.set_ylabel("g-SNR at step 0 (dimensionless, log scale)")
    if groups:
        top = max(max(layers) for layers in groups.values())
        ax.set_xticks(range(0, top + 1, max(1, (top + 1) // 12)))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("g-SNR against layer index (median per block type and layer)\n" + _subtitle(doc), fontsize=9)
    _legend_below(fig, ax)
    return fig


def _step_ticks(doc: dict, tensors: list[dict]) -> list[int]:
    """The measured steps (the spec's, else those the tensors have), at most MAX_STEP_TICKS of them."""
    steps = sorted({int(s) for s in (doc.get("spec") or {}).get("steps") or []}
                   or {int(k) for t in tensors for k in t.get("gsnr_by_step", {})})
    shown = steps[::max(1, math.ceil(len(steps) / MAX_STEP_TICKS))]
    return shown + [steps[-1]] if steps and steps[-1] not in shown else shown


def _over_steps(doc):
    tensors = _good(doc)
    styles = _style_index(doc)
    fig, (ax, ax_rel) = new_figure((11, 5.2), 1, 2)
    seen = set()
    for t in sorted(tensors, key=lambda t: styles[t["block_type"]]):
        pts = sorted((int(k), v) for k, v in t["gsnr_by_step"].items() if v is not None)
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        kind = t["block_type"]
        style = {**line_style(styles[kind]), "linewidth": 0.9, "alpha": 0.8}
        ax.plot(xs, ys, label=None if kind in seen else kind, **style)
        seen.add(kind)
        first = t["gsnr_by_step"].get("0")
        if first:
            ax_rel.plot(xs, [100.0 * (y / first - 1.0) for y in ys], **style)
    ax.set_yscale("log")
    ax.set_ylabel("g-SNR of that step's gradient (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax_rel.set_ylabel("change from step 0 (%)")
    ax_rel.axhline(0.0, color=BLACK, linewidth=0.8)
    ax_rel.grid(True, alpha=0.3)
    ticks = _step_ticks(doc, tensors) if tensors else []
    for a in (ax, ax_rel):
        a.set_xlabel("training step (ticks: the measured steps)")
        if ticks:
            a.set_xticks(ticks, [str(s) for s in ticks])
    fig.suptitle("g-SNR over training, one line per tensor\n" + _subtitle(doc), fontsize=9)
    _legend_below(fig, ax)
    return fig


def _vs_sqrt_n(doc):
    tensors = [t for t in _good(doc) if t["numel"] > 1]
    styles = _style_index(doc)
    fig, ax = new_figure((6.8, 5.8))
    for kind in sorted({t["block_type"] for t in tensors}, key=styles.__getitem__):
        ts = [t for t in tensors if t["block_type"] == kind]
        style = marker_style(styles[kind])
        ax.scatter([math.sqrt(t["numel"] - 1) for t in ts], [t["gsnr_init"] for t in ts], s=26, label=kind,
                   zorder=3, marker=style["marker"], facecolors="none", edgecolors=style["color"])
    if tensors:
        lo = min(math.sqrt(t["numel"] - 1) for t in tensors)
        hi = max(max(math.sqrt(t["numel"] - 1) for t in tensors), max(t["gsnr_init"] for t in tensors))
        ax.plot([lo, hi], [lo, hi], color=BLACK, linewidth=1, linestyle="--", label="y = x (lower bound)", zorder=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sqrt(numel - 1)  (numel: elements in the tensor)")
    ax.set_ylabel("g-SNR at step 0 (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("g-SNR against sqrt(numel - 1)\n" + _subtitle(doc), fontsize=9)
    _legend_below(fig, ax, ncol=3)
    return fig


def gsnr_plots(doc: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write the four figures (PNG and SVG) into ``out_dir`` (created if missing); return the paths."""
    paths: list[Path] = []
    for stem, draw in zip(FIGURES, (_by_type, _by_layer, _over_steps, _vs_sqrt_n), strict=True):
        paths += save_figure(draw(doc), out_dir, stem)
    return paths
