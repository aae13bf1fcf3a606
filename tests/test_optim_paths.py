"""SGDSaI's implementations (compiled, fused, foreach, loop): parity, fallbacks, no transient memory."""

from __future__ import annotations

import contextlib
import copy
import io
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sgdsai_cli.optim import SGDSaI, c_kernel, cpu_kernel, cpu_kernel_error, functional, triton_kernel
from sgdsai_cli.optim.kernel_cache import KERNELS

IMPLS = ["compiled", "fused", "foreach", "loop"]
HPARAMS = [
    {},
    {"lr": 3e-2, "momentum": 0.5, "weight_decay": 0.1},
    {"momentum": 0.0},
    {"weight_decay": 0.0, "gsnr_norm": "max"},
]


def _expected(impl: str, dtype=torch.float32) -> str:
    """The path that runs on the CPU here: compiled falls back where no C compiler built the kernel,
    fused falls back to foreach in bf16/fp16 (torch's CPU fused SGD is inexact there)."""
    if impl == "compiled" and cpu_kernel() is None:
        impl = "fused"
    if impl == "fused" and dtype in (torch.bfloat16, torch.float16):
        impl = "foreach"
    return impl


def _shapes():
    # odd sizes (tails of the vector loops), a 1-element tensor, and tensors above the
    # kernel's parallel threshold (32768 elements)
    return [(257, 129), (129,), (1,), (3, 5, 7), (70_001,), (64, 1024)]


def _cuda_shapes():
    # plus one tensor at or above the size where the CUDA compiled path launches Triton
    return _shapes() + [(1100, 1000)]


def _params(dtype=torch.float32, seed=0, shapes=None):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in (shapes or _shapes())]


def _run(params, steps, dtype=torch.float32, seed=1, **kw):
    """``steps`` steps with the same gradient sequence; returns the optimizer."""
    opt = SGDSaI(params, **kw)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2 + 1e-3).to(dtype)
        opt.step()
    return opt


@pytest.mark.parametrize("hp", HPARAMS, ids=["defaults", "lr-mu-wd", "momentum0", "nowd-max"])
@pytest.mark.parametrize("impl", IMPLS)
def test_every_path_matches_the_loop_path_fp32(impl, hp):
    ref, ours = _params(), _params()
    ref_opt = _run(ref, 6, impl="loop", **hp)
    opt = _run(ours, 6, impl=impl, **hp)
    assert opt.impl_used == _expected(impl)
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=2e-6, atol=2e-7)
        if hp.get("momentum", 0.9) != 0.0:
            torch.testing.assert_close(opt.state[b]["momentum_buffer"], ref_opt.state[a]["momentum_buffer"],
                                       rtol=2e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", IMPLS)
def test_every_path_tracks_fp32_in_low_precision(impl, dtype):
    ref, ours = _params(), _params(dtype)
    _run(ref, 4, impl="loop")
    opt = _run(ours, 4, dtype=dtype, impl=impl)
    assert opt.impl_used == _expected(impl, dtype)
    for a, b in zip(ref, ours, strict=True):
        assert b.dtype == dtype and opt.state[b]["momentum_buffer"].dtype == dtype
        torch.testing.assert_close(b.float(), a.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_path_matches_the_official_package(impl, sgd_sai):
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(40, 300), nn.LayerNorm(300), nn.Linear(300, 200))
    our_model = copy.deepcopy(ref_model)
    ref_opt, opt = sgd_sai.SGD_sai(ref_model.parameters()), SGDSaI(our_model.parameters(), impl=impl)
    gen = torch.Generator().manual_seed(2)
    for _ in range(10):
        x, y = torch.randn(16, 40, generator=gen), torch.randn(16, 200, generator=gen)
        for model, o in ((ref_model, ref_opt), (our_model, opt)):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            with contextlib.redirect_stdout(io.StringIO()):  # the official optimizer prints
                o.step()
    assert opt.impl_used == _expected(impl)
    for a, b in zip(ref_model.parameters(), our_model.parameters(), strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)


def test_auto_picks_the_compiled_kernel_on_cpu():
    if cpu_kernel() is None:
        pytest.skip(f"no CPU kernel here: {cpu_kernel_error()}")
    opt = _run(_params(), 2)
    assert opt.impl_used == "compiled"
    assert opt.resolve_impl(opt.param_groups[0]["params"]) == "compiled"


@pytest.fixture
def no_cpu_kernel(monkeypatch):
    """As if the C compiler failed: the kernel cache says "tried, none"."""
    monkeypatch.setattr(KERNELS, "cpu", None)
    monkeypatch.setattr(KERNELS, "cpu_tried", True)
    monkeypatch.setattr(KERNELS, "cpu_error", "RuntimeError: the C compiler failed: test")


@pytest.mark.parametrize("impl, expected", [("auto", "fused"), ("compiled", "fused"), ("foreach", "foreach")])
def test_without_a_kernel_the_step_falls_back_quietly(no_cpu_kernel, impl, expected, capsys):
    ref, ours = _params(), _params()
    _run(ref, 3, impl="loop")
    opt = _run(ours, 3, impl=impl)
    assert opt.impl_used == expected
    assert capsys.readouterr().err == ""
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("impl", ["compiled", "fused", "foreach", "loop"])
def test_impl_tensors_count_every_tensor_on_the_path_that_ran(impl):
    opt = _run(_params(), 2, impl=impl)
    assert opt.impl_tensors == {_expected(impl): len(_shapes())}


@pytest.mark.parametrize("hp", [{}, {"momentum": 0.0}], ids=["defaults", "momentum0"])
@pytest.mark.parametrize("impl", ["compiled", "fused"])
def test_a_tensor_the_kernel_refuses_runs_eager_and_impl_used_says_so(impl, hp, monkeypatch):
    """Force a per-tensor fallback: the kernels refuse one tensor, which then runs the loop path."""
    ref, ours = _params(), _params()
    refused = ours[1]
    accepts = functional.kernel_accepts
    monkeypatch.setattr(functional, "kernel_accepts", lambda p, g, buf: p is not refused and accepts(p, g, buf))
    _run(ref, 3, impl="loop", **hp)
    opt = _run(ours, 3, impl=impl, **hp)
    ran = _expected(impl)
    assert opt.impl_tensors == {ran: len(ours) - 1, "loop": 1}
    assert opt.impl_used == "loop"  # the slowest path any tensor took
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=2e-6, atol=2e-7)


def test_impl_used_is_the_slowest_path_over_groups():
    a, b = _params()[:2]
    opt = SGDSaI([{"params": [a], "impl": "foreach"}, {"params": [b], "impl": "loop"}])
    for p in (a, b):
        p.grad = torch.full_like(p, 1e-3) + torch.linspace(0, 1e-3, p.numel()).view(p.shape)
    opt.step()
    assert opt.impl_tensors == {"foreach": 1, "loop": 1}
    assert opt.impl_used == "loop"


def test_broken_compiler_gives_no_kernel_and_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(KERNELS, "cpu", None)
    monkeypatch.setattr(KERNELS, "cpu_tried", False)
    monkeypatch.setattr(KERNELS, "cpu_error", None)
    monkeypatch.setenv("SGDSAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(c_kernel, "c_compiler", lambda: "/bin/false")
    assert cpu_kernel() is None
    assert "compiler failed" in cpu_kernel_error()


def test_meta_tensors_use_an_eager_path():
    with torch.device("meta"):
        ps = [nn.Parameter(torch.empty(8, 4)), nn.Parameter(torch.empty(4))]
    for p in ps:
        p.grad = torch.empty_like(p)
    opt = SGDSaI(ps, impl="compiled")
    opt.step()
    assert opt.impl_used == "foreach"


@pytest.mark.parametrize("impl", ["compiled", "fused", "foreach", "auto"])
def test_non_contiguous_tensor_takes_the_eager_path_and_stays_correct(impl):
    base_ref = torch.randn(30, 20)
    base = base_ref.clone()
    ref, ours = nn.Parameter(base_ref.t()), nn.Parameter(base.t())  # transposed views: not contiguous
    assert not ours.is_contiguous()
    _run([ref], 3, impl="loop")
    opt = _run([ours], 3, impl=impl)
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=2e-6, atol=2e-7)
    assert opt.state[ours]["momentum_buffer"].shape == (20, 30)


@pytest.mark.parametrize("impl", IMPLS + ["auto"])
def test_steady_step_never_reads_device_values(impl, monkeypatch):
    params = _params()
    opt = _run(params, 1, impl=impl)

    def forbidden(*_a, **_k):
        raise AssertionError("device-to-host read in a steady-state step")

    for name in ("item", "tolist", "__float__", "__bool__", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    opt.step()


class AllocationMeter(TorchDispatchMode):
    """Peak bytes of new tensor storages that ops create and that are still alive.

    An output counts when its storage is not one of the op's inputs' (an in-place op or a
    view allocates nothing); it stops counting when the tensor is freed. The C kernel runs
    outside the dispatcher and allocates nothing by construction.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.ops: list[str] = []

    def _free(self, nbytes):
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = tree_flatten((args, kwargs))[0]
        inputs = {t.untyped_storage().data_ptr() for t in flat if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                nbytes = t.untyped_storage().nbytes()
                if nbytes:
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    self.ops.append(str(func))
                    weakref.finalize(t, self._free, nbytes)
        return out


def test_the_meter_sees_a_temporary_list():
    """The meter works: a foreach update that multiplies into a temporary list is caught."""
    params = _params()
    bufs = [torch.randn_like(p) for p in params]
    with torch.no_grad(), AllocationMeter() as meter:
        torch._foreach_add_(params, torch._foreach_mul(bufs, 0.1))
    assert meter.peak == sum(b.nbytes for b in bufs)


@pytest.mark.parametrize("hp", [{}, {"momentum": 0.0}], ids=["defaults", "momentum0"])
@pytest.mark.parametrize("impl", IMPLS + ["auto"])
def test_a_step_has_no_full_size_temporary(impl, hp):
    params = _params()
    opt = _run(params, 1, impl=impl, **hp)  # the first step creates the state
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    largest = max(p.nbytes for p in params)
    with AllocationMeter() as meter:
        opt.step()
    assert meter.peak <= largest, meter.ops
    assert meter.peak < 1024, meter.ops  # in fact nothing but scalars


def test_first_step_allocates_only_the_momentum_buffers():
    params = _params()
    for p in params:
        p.grad = torch.full_like(p, 1e-3) + torch.arange(p.numel()).view(p.shape) * 1e-6
    opt = SGDSaI(params)
    with AllocationMeter() as meter:
        opt.step()
    state_bytes = sum(s["momentum_buffer"].nbytes for s in opt.state.values())
    largest = max(p.nbytes for p in params)
    assert meter.peak <= state_bytes + largest  # buffers + the g-SNR reductions' scratch


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("impl", IMPLS)
def test_cuda_paths_match_the_cpu_loop(impl, dtype):
    assert max(torch.Size(s).numel() for s in _cuda_shapes()) >= functional.TRITON_MIN_NUMEL
    ref = _params(shapes=_cuda_shapes())
    ours = [nn.Parameter(p.detach().to("cuda", dtype)) for p in _params(shapes=_cuda_shapes())]
    _run(ref, 4, impl="loop")
    opt = SGDSaI(ours, impl=impl)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        for p in ours:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2 + 1e-3).to("cuda", dtype)
        opt.step()
    assert opt.impl_used == impl or (impl == "compiled" and opt.impl_used == "fused")
    # fp32: CUDA's reductions give g-SNR values that differ from the CPU's in the 7th digit, and
    # lr * g-SNR is ~10 here, so parameters (|p| ~ 1-4) may differ by ~3e-5 after 4 steps.
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.float().cpu(), a.detach(), **tol)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("impl", IMPLS + ["auto"])
def test_cuda_steady_step_never_synchronises(impl):
    params = [nn.Parameter(torch.randn(s, device="cuda")) for s in _cuda_shapes()]
    opt = SGDSaI(params, impl=impl)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("impl", IMPLS)
def test_cuda_step_transient_is_below_the_largest_tensor(impl):
    params = [nn.Parameter(torch.randn(s, device="cuda")) for s in _cuda_shapes()]
    opt = SGDSaI(params, impl=impl)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    opt.step()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= max(p.nbytes for p in params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_in_the_interpreter_matches_eager(dtype, monkeypatch):
    """Where Triton is installed, its CPU interpreter runs the CUDA kernel's code on CPU tensors."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(KERNELS, "triton", None)
    monkeypatch.setattr(KERNELS, "triton_tried", False)
    gen = torch.Generator().manual_seed(0)
    p, g, m = (torch.randn(5003, generator=gen).to(dtype) for _ in range(3))
    p2, m2 = p.clone(), m.clone()
    assert triton_kernel.run_triton(p, g, m, 0.9, 0.999, 0.5)
    m2.mul_(0.9).add_(g, alpha=0.1)
    p2.mul_(0.999).add_(m2, alpha=-0.5)
    tol = {} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(m, m2, **tol)
    torch.testing.assert_close(p, p2, **tol)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "shapes, dtype, expected",
    [
        ([(4096, 1024)] * 2, torch.float32, "compiled"),  # 4M elements a tensor: bandwidth-bound
        ([(768, 768)] * 4, torch.float32, "foreach"),  # small tensors: launch-bound
        ([(4096, 1024)] * 2, torch.bfloat16, "compiled"),
        ([(768, 768)] * 4, torch.bfloat16, "foreach"),
    ],
)
def test_cuda_auto_choice(shapes, dtype, expected):
    params = [nn.Parameter(torch.randn(s, device="cuda", dtype=dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = SGDSaI(params)
    opt.step()
    assert opt.impl_used == (expected if expected != "compiled" or triton_kernel.has_triton() else "fused")


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(not triton_kernel.has_triton(), reason="needs triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_auto_takes_one_multi_tensor_launch_for_small_tensors(dtype):
    """gpt2-like small tensors: auto runs the multi-tensor kernel (one table per group), same result."""
    ref = _params(shapes=_shapes())
    ours = [nn.Parameter(p.detach().to("cuda", dtype)) for p in _params(shapes=_shapes())]
    _run(ref, 3, impl="loop")
    KERNELS.multi_tables.clear()
    opt = SGDSaI(ours)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in ours:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2 + 1e-3).to("cuda", dtype)
        opt.step()
    assert opt.impl_used == "compiled" and opt.impl_tensors == {"compiled": len(ours)}
    assert len(KERNELS.multi_tables) == 2  # the first (direct) step's group and the steady one
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.float().cpu(), a.detach(), **tol)
