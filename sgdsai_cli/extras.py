"""The optional packages (extras), imported quietly and safely: bitsandbytes, and peft (which imports it).

    bnb = import_bitsandbytes("QLoRA")      # EnvironmentUnavailable naming pip install 'sgdsai[bnb]' without it

bitsandbytes logs a warning at import on CPUs with AVX512-BF16 when the optional ``kernels`` package is
missing ("Failed to load CPU gemm_4bit_forward from kernels-community"): its loggers are held at ERROR
for the import only, and their level restored after. Its import makes module-level tensors (the nf4/fp4
tables), so it runs outside any dispatch mode (FakeTensorMode, a live-tensor tracker) and on the CPU:
a first import inside a fake mode would leave bitsandbytes with fake tables for the whole process.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys

from sgdsai_cli.errors import EnvironmentUnavailable, error_text

BNB_EXTRA = "pip install 'sgdsai[bnb]'"
PEFT_EXTRA = "pip install 'sgdsai[peft]'"


@contextlib.contextmanager
def _quiet_and_plain():
    import torch
    from torch.utils._python_dispatch import _disable_current_modes

    logger = logging.getLogger("bitsandbytes")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _disable_current_modes(), torch.device("cpu"):
            yield
    finally:
        logger.setLevel(previous)


def _import_extra(module: str, what: str, extra: str):
    """``module`` imported quietly, outside any dispatch mode; EnvironmentUnavailable saying that ``what`` needs it,
    installed by ``extra``, when it is missing or its import fails (a broken native library: not a traceback)."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    try:
        with _quiet_and_plain():
            return importlib.import_module(module)
    except ImportError:
        raise EnvironmentUnavailable(f"{what} needs {module}: {extra}", field=module, value=module) from None
    except Exception as e:
        raise EnvironmentUnavailable(f"{what} needs {module}, which failed to import ({error_text(e)}): {extra}",
                                     field=module, value=module) from None


def import_bitsandbytes(what: str = "this"):
    """The bitsandbytes module, or EnvironmentUnavailable saying that ``what`` needs it."""
    return _import_extra("bitsandbytes", what, BNB_EXTRA)


def import_peft(what: str = "LoRA"):
    """The peft module (it imports bitsandbytes when present: the same care), or EnvironmentUnavailable."""
    return _import_extra("peft", what, PEFT_EXTRA)
