"""sgdsai: memory and performance profiler for the SGD-SaI optimizer against AdamW.

The Python API is what the command line calls:

    import sgdsai_cli as sg

    result = sg.profile(model="llama2-7b", precision="bf16", optimizers=["sgdsai", "adamw"])
    result.runs[0].memory.state_bytes            # numbers stay numbers
    result.save("llama2-7b-bf16.json")          # the schema-1 JSON document (result.to_dict())
    sg.check(result, baseline="profiles/baselines/llama2-7b-bf16.json", tolerance="0%").passed

``profile``, ``plan``, ``gsnr``, ``check``, ``bench_step`` and ``report`` each return a typed result
with ``to_dict()``; long work takes ``on_progress`` (a callable receiving ``Progress`` records).
Errors are ``BadInput`` (exit 2 in the CLI) and ``EnvironmentUnavailable`` (exit 3), carrying the
offending ``field`` and ``value``. Names are imported on first use, so ``import sgdsai_cli`` is cheap.
"""

from __future__ import annotations

from importlib import import_module

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, RegressionFound, SgdsaiError
from sgdsai_cli.version import __version__

# public name -> (module, attribute)
_API = {
    "profile": ("sgdsai_cli.analysis.profile", "profile"),
    "ProfileRequest": ("sgdsai_cli.analysis.profile", "ProfileRequest"),
    "plan": ("sgdsai_cli.analysis.plan", "plan"),
    "gsnr": ("sgdsai_cli.analysis.gsnr", "gsnr"),
    "check": ("sgdsai_cli.analysis.check", "check"),
    "bench_step": ("sgdsai_cli.measure.bench", "bench_step"),
    "report": ("sgdsai_cli.render.report", "build_report"),
    "load_result": ("sgdsai_cli.schema", "load_result"),
    "SGDSaI": ("sgdsai_cli.optim", "SGDSaI"),
    "Progress": ("sgdsai_cli.progress", "Progress"),
    "ProfileResult": ("sgdsai_cli.results", "ProfileResult"),
    "RunResult": ("sgdsai_cli.results", "RunResult"),
    "MemoryResult": ("sgdsai_cli.results", "MemoryResult"),
}

__all__ = ["BadInput", "EnvironmentUnavailable", "RegressionFound", "SgdsaiError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attribute = _API[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sgdsai_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
