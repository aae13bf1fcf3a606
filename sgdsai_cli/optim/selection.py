"""Which SGD-SaI update path runs for a list of tensors: the requested one, or the next that can.

Paths in fallback order: compiled -> fused -> foreach -> loop (``FALLBACK``). ``auto`` starts at
compiled where it pays (always on the CPU; on CUDA for large tensors) and at foreach otherwise.
A path is skipped where it cannot run: no C compiler or Triton, meta or fake tensors (they have no
storage), dtypes a kernel does not take, or torch's CPU fused SGD in bf16/fp16 (its momentum is
wrong there in torch 2.13).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgdsai_cli.optim import triton_kernel
from sgdsai_cli.optim.c_kernel import C_DTYPES, c_compiler, cpu_kernel
from sgdsai_cli.optim.host import is_symbolic
from sgdsai_cli.optim.kernel_cache import KERNELS

IMPLS = ("auto", "compiled", "fused", "foreach", "loop")
FALLBACK = ("compiled", "fused", "foreach", "loop")

# Measured on one H100 (torch 2.11, Triton 3.6; ratios to fused AdamW): llama2-7b layer shapes
# (mean 22M elements a tensor): compiled 0.66 in fp32 and 0.62 in bf16, foreach 1.10 and 0.97;
# gpt2 shapes (mean 0.84M): compiled 0.93-1.22 (launch-bound: one Triton launch per tensor),
# foreach 0.95-1.00. With one launch per tensor, "auto" compiled only models with large tensors
# (CUDA_COMPILED_MEAN_NUMEL); the multi-tensor kernel (one launch per dtype for all tensors) removes
# the launch cost, so "auto" now compiles on CUDA at every size where it runs. Its gpt2 ratio is not
# yet measured on a GPU: scripts/gpu-allocator-multi.sh measures it.
CUDA_COMPILED_MEAN_NUMEL = 1 << 22
_FUSED_DTYPES = {"cpu": {torch.float32, torch.float64},
                 "cuda": {torch.float32, torch.float64, torch.float16, torch.bfloat16}}


def choose_impl(requested: str, params: list[Tensor], *, build: bool) -> str:
    """The path a step takes for ``params`` when ``requested`` (one of ``IMPLS``) is asked for.

    With ``build=False`` the compiled path is predicted from what is installed (a C compiler on the
    CPU, Triton on CUDA) without building anything; with ``build=True`` it is built (once per
    process) and skipped if that fails.
    """
    first = requested
    if first == "auto":
        first = "compiled" if _compiled_pays(params, build=build) else "foreach"
    for impl in FALLBACK[FALLBACK.index(first):]:
        if not impl_available(impl, params, build=build):
            continue
        if requested == "auto" and impl == "compiled" and build and _serial_kernel_on_threads(params):
            continue  # a one-thread kernel loses to torch's multi-threaded fused path
        return impl
    return "loop"


def impl_available(impl: str, params: list[Tensor], *, build: bool) -> bool:
    """Can ``impl`` run on these parameters? ``build`` builds the compiled kernel if needed."""
    if impl in ("loop", "foreach"):
        return True
    devices = {p.device.type for p in params}
    if not params or len(devices) != 1 or "meta" in devices or is_symbolic(params[0]):
        return False  # meta/fake tensors (a model is fake as a whole): fused SGD and the kernels need storage
    device = devices.pop()
    dtypes = {p.dtype for p in params}
    if impl == "fused":
        return dtypes <= _FUSED_DTYPES.get(device, set())
    if device == "cpu":
        return _cpu_kernel_available(dtypes, build=build)
    if device == "cuda" and dtypes <= set(triton_kernel.DTYPES):
        return triton_kernel.triton_ready(params[0].device, dtypes) if build else triton_kernel.has_triton()
    return False


def _cpu_kernel_available(dtypes: set, *, build: bool) -> bool:
    if not dtypes <= set(C_DTYPES):
        return False
    if not build:
        return c_compiler() is not None
    kernel = cpu_kernel()
    return kernel is not None and all(kernel.supports(dt) for dt in dtypes)


def _compiled_pays(params: list[Tensor], *, build: bool) -> bool:
    """Whether "auto" should try the compiled path first for these tensors."""
    if not params or params[0].device.type != "cuda":
        return True  # CPU: the one-pass C kernel wins at every size measured
    dtypes = {p.dtype for p in params}
    if dtypes <= set(triton_kernel.DTYPES) and (
            triton_kernel.multi_ready(params[0].device, dtypes) if build else triton_kernel.has_triton()):
        return True  # one launch for every tensor: no launch-bound small-tensor case
    return sum(p.numel() for p in params) / len(params) >= CUDA_COMPILED_MEAN_NUMEL


def _serial_kernel_on_threads(params: list[Tensor]) -> bool:
    """The CPU kernel was built without OpenMP while torch runs several threads."""
    kernel = KERNELS.cpu
    return (params[0].device.type == "cpu" and kernel is not None and not kernel.openmp
            and torch.get_num_threads() > 1)
