"""The tool's version (read by pyproject.toml and written into every result document)."""

__version__ = "0.1.0"
