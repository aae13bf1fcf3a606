"""Command-line interface: a thin layer of Typer commands over the library core."""

from __future__ import annotations

from sgdsai_cli.cli import bench_step, check, gsnr, plan, presets, profile, report  # noqa: F401  (registers commands)
from sgdsai_cli.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
