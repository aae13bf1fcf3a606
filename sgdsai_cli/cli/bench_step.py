"""`sgdsai bench-step`."""

from __future__ import annotations

from .app import app, handle_errors, not_built


@app.command("bench-step", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def bench_step_command() -> None:
    """Not built yet."""
    not_built("bench-step", "see the open issues")
