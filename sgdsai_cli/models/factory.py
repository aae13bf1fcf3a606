"""Your own model: ``--model package.module:factory`` or ``--model path/to/file.py:factory``, or the callable itself.

    spec  = factory_spec("my_models.py:build")     # or factory_spec(build) from Python
    model = build_factory(spec, "meta", torch.float32)   # factory() under torch.device("meta"), dtype as default
    batch = factory_batch(spec, model, 2, 512, "meta")   # the module's batch(model, batch_size, seq_len, device)
    loss  = factory_loss(spec, model, batch)             # the module's loss(model, batch)

The protocol (docs/your-model.md): ``factory()`` takes no arguments and returns an ``nn.Module``;
we call it under ``torch.device(device)`` with the precision's dtype as the default dtype (and
inside a ``FakeTensorMode`` for the estimate), so building touches no memory. Beside it, in the
same module, an optional ``batch(model, batch_size, seq_len, device)`` returns the training batch
(a tensor, a tuple or a dict) and an optional ``loss(model, batch)`` returns the scalar to
backpropagate. Without them: a model whose first layer is an ``nn.Embedding`` gets random tokens
``[B, S]`` with next-token targets, one whose first layer is an ``nn.Conv2d`` images
``[B, C, 224, 224]`` with class labels, one whose first layer is an ``nn.Linear`` a float batch
``[B, in_features]``; the default loss is ``output.loss`` when the output has one, else
cross-entropy when the targets are class indices matching the output, else ``output.float().mean()``.

An error raised in the user's code is one BadInput line naming the file, the line and the
exception (``detail`` on the error holds the traceback, shown with ``--verbose``). A real run
imports the factory again in its child process from ``target``; a callable that cannot be imported
again (a lambda, a local function, one defined in an interactive session) is refused for real
runs and sized and estimated in-process only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdsai_cli.errors import BadInput, error_text
from sgdsai_cli.models.configs import FactoryConfig, ModelSpec
from sgdsai_cli.models.names import _TARGET, looks_like_target  # noqa: F401 (factory.looks_like_target)


def factory_spec(model) -> ModelSpec:
    """The spec of a factory given as a target string or as the callable itself."""
    if isinstance(model, str):
        target = _absolute_target(model)
        load_target(target)  # a missing module, file or attribute: refused now (imported once, then cached)
        return ModelSpec(name=model, family="factory", config=FactoryConfig(target), params=None)
    if not callable(model):
        raise BadInput(f"model must be a name, a path or a callable, got {type(model).__name__}", field="model")
    target = reimport_target(model)
    name = getattr(model, "__qualname__", None) or type(model).__name__
    return ModelSpec(name=target or name, family="factory", config=FactoryConfig(target, model), params=None)


def _absolute_target(text: str) -> str:
    m = _TARGET.match(text)
    where, attr = m.group("where"), m.group("attr")
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise BadInput(f"{where}: no such file", field="model", value=text)
        where = os.path.abspath(where)
    return f"{where}:{attr}"


def reimport_target(fn) -> str | None:
    """Where a child process can import ``fn`` from again, or None (lambda, local function, no file)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    mod = sys.modules.get(module)
    if module == "__main__" or getattr(mod, "__sgdsai_file__", False):
        path = getattr(mod, "__file__", None)
        return f"{os.path.abspath(path)}:{qualname}" if path and path.endswith(".py") else None
    return f"{module}:{qualname}"


def _load_file(path: str):
    name = "sgdsai_user_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"{path}: cannot be imported as a Python file", field="model", value=path)
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
        return sys.modules[name]  # imported once per process, as `import` does
    module = importlib.util.module_from_spec(spec)
    module.__sgdsai_file__ = True
    sys.modules[name] = module  # as an import registers it (dataclasses, pickling and batch()/loss() lookup need it)
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)  # the file's own imports of its neighbours, while it runs
    try:
        with user_code(path):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
    return module


def _module_of(target: str):
    where = _TARGET.match(target).group("where")
    if where.endswith(".py"):
        return _load_file(where)
    with user_code(where):
        try:
            return importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name and (where == e.name or where.startswith(e.name + ".")):  # the target itself, not its imports
                raise BadInput(f"{target}: no module named '{e.name}'", field="model", value=target) from None
            raise


def load_target(target: str) -> Callable:
    """The callable at ``target`` (``module:name`` or ``/abs/file.py:name``)."""
    module = _module_of(target)
    obj = module
    for part in _TARGET.match(target).group("attr").split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise BadInput(f"{target}: '{module.__name__}' has no attribute '{part}'", field="model", value=target)
    if not callable(obj):
        raise BadInput(f"{target}: not callable ({type(obj).__name__})", field="model", value=target)
    return obj


def _callable(cfg: FactoryConfig) -> Callable:
    return cfg.factory if cfg.factory is not None else load_target(cfg.target)


def _companion(cfg: FactoryConfig, name: str) -> Callable | None:
    """``batch`` or ``loss`` defined beside the factory in its module, if any."""
    fn = _callable(cfg)
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    found = getattr(module, name, None) if module is not None else None
    return found if callable(found) and found is not fn else None


class user_code:
    """Turn an exception raised in the user's code into one BadInput line: file, line, exception.

    The full traceback is kept on the error's ``detail`` (shown with ``--verbose``).
    """

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, BadInput) or not isinstance(exc, Exception):
            return False
        frames = traceback.extract_tb(tb)
        skip = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(torch.__file__))
        theirs = [f for f in frames if not os.path.abspath(f.filename).startswith(skip)
                  and "importlib" not in f.filename]
        where = f"{theirs[-1].filename}:{theirs[-1].lineno}" if theirs else self.what
        err = BadInput(f"{where}: {error_text(exc)} (in {self.what})",
                       field="model", value=self.what)
        err.detail = "".join(traceback.format_exception(kind, exc, tb))
        raise err from None


def build_factory(spec: ModelSpec, device, dtype: torch.dtype) -> nn.Module:
    fn = _callable(spec.config)
    with user_code(f"{spec.name}()"), torch.device(device):
        model = fn()
    if not isinstance(model, nn.Module):
        raise BadInput(f"{spec.name}: the factory returned {type(model).__name__}, not an nn.Module",
                       field="model", value=spec.name)
    return model.to(dtype=dtype).train() if _float_params(model, dtype) else model.train()


def _float_params(model: nn.Module, dtype: torch.dtype) -> bool:
    return any(p.is_floating_point() and p.dtype != dtype for p in model.parameters())


def _first_layer(model: nn.Module) -> nn.Module | None:
    return next((m for m in model.modules() if isinstance(m, (nn.Embedding, nn.Conv2d, nn.Linear))), None)


def factory_batch(spec: ModelSpec, model: nn.Module | None, batch_size: int, seq_len: int, device,
                  generator=None):
    """The user's ``batch(model, batch_size, seq_len, device)``, else the default for the first layer."""
    fn = _companion(spec.config, "batch")
    if fn is not None:
        with user_code(f"{spec.name} batch()"):
            return fn(model, batch_size, seq_len, torch.device(device))
    first = _first_layer(model) if model is not None else None
    device = torch.device(device)
    gdev = generator.device if generator is not None else torch.device("cpu")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32) \
        if model is not None else torch.float32

    def draw(make):
        return make(torch.device("cpu") if device.type == "meta" else gdev).to(device)

    if isinstance(first, nn.Embedding):
        n = first.num_embeddings
        return (draw(lambda d: torch.randint(0, n, (batch_size, seq_len), generator=generator, device=d)),
                draw(lambda d: torch.randint(0, n, (batch_size, seq_len), generator=generator, device=d)))
    if isinstance(first, nn.Conv2d):
        shape = (batch_size, first.in_channels, 224, 224)
        return (draw(lambda d: torch.randn(shape, generator=generator, device=d).to(dtype)),
                draw(lambda d: torch.randint(0, 1000, (batch_size,), generator=generator, device=d)))
    if isinstance(first, nn.Linear):
        return draw(lambda d: torch.randn(batch_size, first.in_features, generator=generator, device=d).to(dtype))
    raise BadInput(f"{spec.name}: no default batch for this model (its first layer is not an Embedding, Conv2d or "
                   "Linear); define batch(model, batch_size, seq_len, device) beside the factory",
                   field="model", value=spec.name)


def factory_loss(spec: ModelSpec, model: nn.Module, batch) -> Tensor:
    """The user's ``loss(model, batch)``, else the default loss of the output (see the module docstring)."""
    fn = _companion(spec.config, "loss")
    with user_code(f"{spec.name} loss()" if fn is not None else f"{spec.name} forward"):
        if fn is not None:
            return fn(model, batch)
        if isinstance(batch, dict):
            out, targets = model(**batch), None
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            out, targets = model(batch[0]), batch[1]
        else:
            out, targets = model(batch), None
        loss = getattr(out, "loss", None)
        if isinstance(loss, Tensor):
            return loss
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = out.get("logits", next(iter(out.values())))
        if (targets is not None and not targets.is_floating_point() and out.is_floating_point()
                and tuple(out.shape[:-1]) == tuple(targets.shape)):
            return F.cross_entropy(out.float().reshape(-1, out.shape[-1]), targets.reshape(-1))
        return out.float().mean()


def check_reimportable(spec: ModelSpec) -> None:
    """BadInput for a factory a real run's child process could not import again (a lambda, a local function)."""
    if spec.family == "factory" and spec.config.target is None:
        raise BadInput(f"'{spec.name}' cannot be imported again by the real run's child process (a lambda or a "
                       "local function): define it at module level in a file, or profile it on the meta device",
                       field="model", value=spec.name)
