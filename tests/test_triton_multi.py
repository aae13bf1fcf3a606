"""The multi-tensor Triton kernel, run by Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``).

The interpreter executes the kernel's own code (pointer table, chunking, masks) in numpy, so these
tests check its arithmetic and bookkeeping without a GPU; the GPU tests in ``test_optim_paths``
run the compiled kernel. The interpreter must be chosen before Triton is imported, hence a child
process per test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="needs triton (pip install 'triton==3.9.*')")

PRELUDE = """
import json, torch
from sgdsai_cli.optim import functional, triton_kernel as tk
SIZES = [1, 17, 4096, 4099, 2 * 4096 + 5, 3]
def tensors(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen).to(dtype) for n in SIZES]
"""


def _child(body: str, interpret: bool = True) -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernel_matches_the_fp32_formula_in_every_dtype():
    """m = mu*m + (1-mu)*g and theta = decay*theta - step*m computed in fp32, each rounded once to the
    dtype: within one unit in the last place of the result (the parameter's reference uses the
    momentum the kernel stored, so each check sees one rounding)."""
    res = _child("""
    errs = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert tk.multi_ready(torch.device("cpu"), (dtype,))
        for has_m in (True, False):
            ps, gs, ms = tensors(dtype, 0), tensors(dtype, 1), tensors(dtype, 2)
            p0, m0 = [p.float().clone() for p in ps], [m.float().clone() for m in ms]
            steps, mu, decay = [0.1 * (i + 1) for i in range(len(ps))], (0.9 if has_m else 0.0), 0.99
            assert tk.run_triton_multi(ps, gs, ms if has_m else None, steps, mu, decay)
            pairs = []
            for p, g, m, a, b, s in zip(ps, gs, ms, p0, m0, steps):
                d = g.float()
                if has_m:
                    pairs.append((m, (mu * b + (1 - mu) * g.float()).to(dtype)))
                    d = m.float()
                pairs.append((p, (decay * a - s * d).to(dtype)))
            errs[f"{dtype}-{has_m}"] = max(((x.float() - y.float()).abs() / y.float().abs().clamp(min=1e-4))
                                           .max().item() for x, y in pairs)
    print(json.dumps(errs))
    """)
    # one ulp relative: 2**-7 (bf16), 2**-10 (fp16); fp32 a few ulps (contraction). The interpreter's
    # bf16 cast truncates where the GPU rounds to nearest: still within one ulp.
    for key, err in res.items():
        limit = 1e-6 if "float32" in key else (2**-7 if "bfloat16" in key else 2**-10)
        assert err <= limit, (key, err)


def test_tables_follow_new_gradients_and_steps():
    """Second and third calls with new gradient tensors and new steps use the rewritten tables."""
    res = _child("""
    ps = tensors(torch.float32, 0)
    ref = [p.clone() for p in ps]
    ms = [torch.zeros_like(p) for p in ps]
    refm = [m.clone() for m in ms]
    for step in range(3):
        gs = tensors(torch.float32, 10 + step)   # new storages every step, as after zero_grad
        steps = [0.01 * (step + 1) * (i + 1) for i in range(len(ps))]
        assert tk.run_triton_multi(ps, gs, ms, steps, 0.9, 0.995)
        functional._loop(ref, gs, refm, steps, 1.0, 0.9, 0.995)
    tables = len(tk.KERNELS.multi_tables)
    err = max((a - b).abs().max().item() for a, b in zip(ps + ms, ref + refm))
    print(json.dumps({"err": err, "tables": tables}))
    """)
    assert res["err"] < 1e-5 and res["tables"] == 1


def test_functional_path_with_fallback_for_unaligned_views():
    """Through the functional API: aligned tensors take the kernel, an unaligned view is refused and
    runs the loop path, and every tensor ends where the loop path puts it."""
    res = _child("""
    functional._PATHS["compiled"] = functional._compiled_multi   # the CUDA route, on CPU tensors
    def make():
        base = tensors(torch.float32, 0)
        view = torch.randn(1001, generator=torch.Generator().manual_seed(5))[1:]  # 4-byte offset
        return base + [view]
    ours, ref = make(), make()
    bufs, rbufs = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ref]
    grads = tensors(torch.float32, 3) + [torch.ones(1000)]
    scales = [1.0 + i for i in range(len(ours))]
    ran = functional.sgdsai(ours, grads, bufs, scales, lr=0.01, momentum=0.9, decay=0.999, impl="compiled")
    functional.sgdsai(ref, grads, rbufs, scales, lr=0.01, momentum=0.9, decay=0.999, impl="loop")
    err = max((a - b).abs().max().item() for a, b in zip(ours + bufs, ref + rbufs))
    print(json.dumps({"err": err, "ran": dict(ran)}))
    """)
    assert res["err"] < 1e-5
    assert res["ran"] == {"compiled": 6, "loop": 1}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_kernel_compiles_for_an_h100_with_16_byte_accesses(dtype):
    """Ahead-of-time compilation for sm_90 (Triton's bundled ptxas; no GPU needed): the kernel
    builds, and its full chunks load and store 16 bytes at a time (``ld.global.v4``), which the
    per-tensor kernel got only from Triton's n % 16 specialisation."""
    res = _child(f"DTYPE = {dtype!r}\n" + textwrap.dedent("""
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    _, fn = tk._jit_multi()
    sig = {"ptrs": "*i64", "meta": "*i64", "steps": "*fp32", "n_tensors": "i32", "mu": "fp32", "omm": "fp32",
           "decay": "fp32", "DT": "constexpr", "HAS_M": "constexpr", "BLOCK": "constexpr"}
    out = {}
    for has_m in (True, False):
        consts = {"DT": getattr(tl, DTYPE), "HAS_M": has_m, "BLOCK": tk.MULTI_BLOCK}
        src = ASTSource(fn=fn, signature=sig, constexprs=consts)
        ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8}).asm["ptx"]
        out[str(has_m)] = ("ld.global.v4" in ptx or "ld.global.nc.v4" in ptx) and "st.global.v4" in ptx
    print(json.dumps(out))
    """), interpret=False)
    assert res == {"True": True, "False": True}
