"""sgdsai: memory and performance profiler for the SGD-SaI optimizer against AdamW."""

__version__ = "0.1.0"
