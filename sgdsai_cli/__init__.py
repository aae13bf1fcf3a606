"""sgdsai: memory and performance profiler for the SGD-SaI optimizer against AdamW."""

from sgdsai_cli.version import __version__  # noqa: F401
