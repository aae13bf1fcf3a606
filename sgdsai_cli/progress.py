"""Progress of long work, reported through a callback: the core reports, the CLI draws.

    def on_progress(p: Progress) -> None: ...
    sgdsai_cli.profile(model="gpt2", device="cpu", on_progress=on_progress)

A task (one optimizer's run, one planner row, one g-SNR step) reports ``completed`` out of ``total``
units (None when not known yet) and a short ``stage`` word ("warmup", "measured", "ok", "oom").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    task: str  # what is being worked on: an optimizer, a model, a GPU row
    completed: int | None = None  # units done so far
    total: int | None = None  # units in all (None: not known yet)
    stage: str = ""  # a word for the display: "starting", "warmup", "measured", "ok", "oom", "done"


ProgressCallback = Callable[[Progress], None]


def report_to(callback: ProgressCallback | None) -> ProgressCallback:
    """``callback``, or a function that ignores progress when there is none."""
    return callback if callback is not None else (lambda _p: None)
