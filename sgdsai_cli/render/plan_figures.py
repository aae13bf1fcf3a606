"""Figures for a plan document: one per precision, each optimizer's memory on one GPU against the cards.

    paths = write_plan_figures(doc, out_dir)   # plan-<model>-<precision>.png and .svg per precision

Each figure stacks, per optimizer, what one GPU holds at the step's peak (no sharding): parameters,
gradients, optimizer state, the activations or the step's temporaries (whichever peak is higher) and
the CUDA context allowance; a horizontal line marks each planned card's memory, its label moved up
where it would cover the label below.
The document is the ``kind: "plan"`` one: ``doc["rows"]`` holds one record per (optimizer,
precision, gpu) with ``*_bytes`` sizes, ``gpu_label`` and ``gpu_memory_bytes``.
"""

from __future__ import annotations

from pathlib import Path

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.figures import BLACK, DASHES, color, new_figure, save_figure
from sgdsai_cli.render.format import GiB

# (row key, legend label) of each stacked segment, bottom to top
PARTS = (
    ("param_bytes", "parameters"),
    ("grad_bytes", "gradients"),
    ("state_bytes", "optimizer state"),
    ("peak_extra_bytes", "activations or step temporaries (at the peak)"),
    ("context_bytes", "CUDA context allowance"),
)
LABEL_GAP = 0.045  # of the y range: the least distance between two card labels


def figure_stem(doc: dict, precision: str) -> str:
    """'plan-llama2-7b-bf16'; a config.json model is named after its folder (or file)."""
    model = str((doc.get("spec") or {}).get("model"))
    if model.endswith(".json"):
        path = Path(model)
        model = path.parent.name if path.stem == "config" else path.stem
    return f"plan-{model}-{precision}".replace("/", "_").replace("\\", "_")


def _cards(rows: list[dict]) -> list[tuple[str, int]]:
    """(label, bytes) of each planned card, smallest first."""
    return sorted({(r["gpu_label"], r["gpu_memory_bytes"]) for r in rows}, key=lambda c: (c[1], c[0]))


def _spread(values: list[float], gap: float) -> list[float]:
    """Label heights for sorted line heights: each at least ``gap`` above the one below."""
    out: list[float] = []
    for v in values:
        out.append(max(v, out[-1] + gap) if out else v)
    return out


def _draw(ax, doc: dict, precision: str) -> None:
    rows = [r for r in doc.get("rows", []) if r["precision"] == precision]
    by_opt: dict[str, dict] = {}
    for r in rows:
        by_opt.setdefault(r["optimizer"], r)
    stacks = {n: {**r, "peak_extra_bytes": r["total_bytes"] - r["model_state_bytes"] - r["context_bytes"]}
              for n, r in by_opt.items()}
    labels = [f"{n}/{r['impl']}" if r.get("impl") else n for n, r in stacks.items()]
    bottom = [0.0] * len(stacks)
    for i, (key, label) in enumerate(PARTS):
        values = [r[key] / GiB for r in stacks.values()]
        ax.bar(labels, values, bottom=bottom, label=label, color=color(i), width=0.55)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    cards = _cards(rows)
    top = max([*bottom, *(mem / GiB for _, mem in cards)]) * 1.1
    heights = _spread([mem / GiB for _, mem in cards], LABEL_GAP * top)
    for (label, mem), y, dash in zip(cards, heights, DASHES * len(cards), strict=False):
        ax.axhline(mem / GiB, color=BLACK, linestyle=dash, linewidth=1)
        ax.annotate(f"{label} ({fmt.size(mem)})", xy=(1.0, mem / GiB), xycoords=("axes fraction", "data"),
                    xytext=(1.02, y), textcoords=("axes fraction", "data"), va="center", fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if y != mem / GiB else None,
                    annotation_clip=False)
    for i, r in enumerate(stacks.values()):
        ax.annotate(f"total {fmt.size(r['total_bytes'])}", xy=(i, bottom[i]), xytext=(0, 4),
                    textcoords="offset points", ha="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    ax.set_ylim(0, top)
    ax.set_ylabel("GiB on one GPU (no sharding)")
    ax.margins(x=0.15)


def write_plan_figures(doc: dict, out_dir: str | Path) -> list[Path]:
    """One figure per precision of the plan (PNG and SVG, named by ``figure_stem``); return the paths."""
    rows = doc.get("rows", [])
    spec = doc.get("spec") or {}
    paths: list[Path] = []
    for precision in dict.fromkeys(r["precision"] for r in rows):
        n = len({r["optimizer"] for r in rows if r["precision"] == precision})
        fig, ax = new_figure((max(6.5, 1.7 * n + 4.5), 5.2))
        _draw(ax, doc, precision)
        # the card labels hang off the right edge: keep them inside the saved figure
        ax.annotate(" ", xy=(1.34, 0), xycoords="axes fraction")
        ax.set_title(f"Training memory on one GPU against each card's memory (estimate)\n"
                     f"{spec.get('model')}, {precision}, batch {spec.get('batch_size')} x seq {spec.get('seq_len')}",
                     fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
        paths += save_figure(fig, out_dir, figure_stem(doc, precision))
    return paths
