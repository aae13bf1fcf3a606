"""Upper bounds on what a run may be asked to do: step counts.

``MAX_STEPS`` bounds the measured steps and the warm-up steps of a real run (``realrun.run_real``,
the worker's ``training.TrainingRun``) and the rounds of ``bench-step`` (``BenchSpec.steps`` and
``warmup``), as ``analysis.gsnr.MAX_STEP`` bounds g-SNR's steps. A count above it is BadInput
(the field named, the value carried) before any work, not a run that never finishes. No torch
here: a caller can check a request before it imports anything heavy.
"""

from __future__ import annotations

from typing import Any

MAX_STEPS = 100_000  # steps (and warm-up steps) of one real run or one bench-step


def shown(value: Any) -> str:
    """repr() of a bad count for an error line; an integer too long to print whole is cut (no 4300-digit limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = int(value.bit_length() * 0.30103) + 1  # log10(2): about that many digits
        return f"{'-' if value < 0 else ''}<an integer of about {digits} digits>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_step_count(name: str, value: Any, minimum: int) -> int:
    """``value`` when it is a whole number within ``minimum..MAX_STEPS``; BadInput naming ``name`` otherwise."""
    from sgdsai_cli.errors import BadInput

    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadInput(f"bad {name} {shown(value)} (must be {minimum} or more)", field=name, value=value)
    if value > MAX_STEPS:
        raise BadInput(f"bad {name} {shown(value)} (must be at most {MAX_STEPS})", field=name, value=value)
    return value


def check_steps_and_warmup(steps: Any, warmup: Any) -> None:
    """Both counts of a run: ``steps`` 1..MAX_STEPS measured, ``warmup`` 0..MAX_STEPS before them."""
    check_step_count("steps", steps, 1)
    check_step_count("warmup", warmup, 0)
