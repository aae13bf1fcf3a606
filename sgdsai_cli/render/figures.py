"""What every figure shares: a figure that touches no global state, the one PNG+SVG saver, the palette.

    fig, ax = new_figure((7, 4.5))
    ax.plot(xs, ys, **line_style(0))
    paths = save_figure(fig, out_dir, "latency")   # out_dir/latency.png and out_dir/latency.svg

Figures are ``matplotlib.figure.Figure`` objects drawn on their own Agg canvas: pyplot, its list of
open figures and the process-wide backend are never used, so drawing from a library leaves the
caller's matplotlib as it was, and nothing needs closing. matplotlib is imported inside the
functions: importing a figure module costs nothing.

The palette is Okabe and Ito's, safe for the common colour-vision deficiencies, with its yellow (too
pale for a line on white) replaced by Paul Tol's wine. Colour alone does not
carry a series: ``line_style(i)`` adds a marker (hollow, so that coinciding points stay visible) and,
past the palette's length, a dash pattern; two series that lie on top of each other still show both
markers. SVGs carry no date, so the same figure writes the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sgdsai_cli.render.format import GiB, MiB

FORMATS = ("png", "svg")
DPI = 120

BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, BLACK, WINE = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#882255")
PALETTE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, WINE, BLACK)
GREY = "#8C8C8C"
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7, prime to the palette's 8: (colour, marker) pairs repeat after 56
DASHES = ("-", "--", ":", "-.")

# the training phases, in the order a step runs them, and their shading
PHASES = ("forward", "backward", "optimizer_step", "zero_grad")
PHASE_COLORS = {"setup": GREY, "forward": SKY, "backward": ORANGE, "optimizer_step": GREEN,
                "zero_grad": PURPLE, "first_step": GREY}


def color(i: int) -> str:
    """The i-th colour of the palette (it wraps)."""
    return PALETTE[i % len(PALETTE)]


def line_style(i: int) -> dict[str, Any]:
    """Keyword arguments for ``ax.plot`` that make series i unlike series 0..i-1."""
    return {"color": color(i), "marker": MARKERS[i % len(MARKERS)], "markerfacecolor": "none",
            "markersize": 6 + 1.5 * (i % 3), "linestyle": DASHES[(i // len(PALETTE)) % len(DASHES)]}


def marker_style(i: int) -> dict[str, Any]:
    """Keyword arguments for ``ax.scatter``: the colour and marker of ``line_style(i)``."""
    return {"color": color(i), "marker": MARKERS[i % len(MARKERS)]}


def byte_axis(max_bytes: float) -> tuple[float, str]:
    """(scale, unit) for an axis of bytes whose largest value is ``max_bytes``: GiB, else MiB."""
    return (GiB, "GiB") if max_bytes >= GiB else (MiB, "MiB")


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots: Any):
    """A (figure, axes) pair on a private Agg canvas, laid out by constrained layout.

    ``axes`` is one Axes for 1 x 1, else the array ``Figure.subplots`` returns (``squeeze`` etc. pass through).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``out_dir/<stem>.png`` and ``.svg`` (atomically, folder created); return both paths."""
    from sgdsai_cli.files import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        paths.append(write_text_atomic(out / f"{stem}.{fmt}", buf.getvalue()))
    return paths


def device_line(doc: dict) -> str:
    """'gpt2, bf16, cuda (NVIDIA H100 80GB HBM3), batch 4 x seq 1024': what a profile figure measured."""
    spec = doc.get("spec") or {}
    device = (doc.get("environment") or {}).get("device") or {}
    dev = spec.get("device") or device.get("type") or "?"
    if dev == "meta":
        dev = "estimate, no device"
    elif device.get("name") and device.get("name") != dev:
        dev = f"{dev} ({device['name']})"
    shape = f"batch {spec.get('batch_size', '?')}"
    if spec.get("seq_len") is not None:
        shape += f" x seq {spec['seq_len']}"
    return f"{spec.get('model', '?')}, {spec.get('precision', '?')}, {dev}, {shape}"
