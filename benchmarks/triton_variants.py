"""Does Triton's specialisation on the element count matter for the SGD-SaI kernel? (CUDA only)

Times the same update kernel compiled two ways, with ``do_not_specialize=["n"]`` (one variant
whatever the size) and with Triton's default specialisation (n % 16 == 0 lets it prove the mask
uniform across a vector and emit 16-byte loads), on fp32 and bf16 tensors, interleaved, with CUDA
events. Prints GB/s (20 bytes per fp32 parameter, 10 per bf16) and the copy bandwidth measured in
the same run.

    python benchmarks/triton_variants.py [--numel 268435456] [--rounds 21]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import triton
import triton.language as tl


def _body(p_ptr, g_ptr, m_ptr, n, mu, omm, decay, step, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
    p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
    ms = (mu * m + omm * g).to(m_ptr.dtype.element_ty)
    tl.store(m_ptr + offs, ms, mask=mask)
    tl.store(p_ptr + offs, (decay * p - step * ms.to(tl.float32)).to(p_ptr.dtype.element_ty), mask=mask)


generic = triton.jit(do_not_specialize=["n"])(_body)
special = triton.jit(_body)


def _time(fn, args, n, block, rounds):
    grid = (triton.cdiv(n, block),)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn[grid](*args, n, 0.9, 0.1, 0.9999, 1e-3, BLOCK=block, num_warps=8)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", type=int, default=1 << 28)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--block", type=int, default=4096)
    a = ap.parse_args()
    for dtype in (torch.float32, torch.bfloat16):
        n = a.numel
        p, g, m = (torch.randn(n, device="cuda").to(dtype) for _ in range(3))
        src = torch.randn(n * 5 // 2, device="cuda").to(dtype)
        dst = torch.empty_like(src)
        times = {"generic": [], "specialised": [], "copy": []}
        for _ in range(3):
            _time(generic, (p, g, m), n, a.block, 1)
            _time(special, (p, g, m), n, a.block, 1)
        for _ in range(a.rounds):
            times["generic"].append(_time(generic, (p, g, m), n, a.block, 1))
            times["specialised"].append(_time(special, (p, g, m), n, a.block, 1))
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            dst.copy_(src)
            e.record()
            torch.cuda.synchronize()
            times["copy"].append(s.elapsed_time(e))
        size = p.element_size()
        moved = {"generic": 5 * n * size, "specialised": 5 * n * size, "copy": 2 * src.numel() * size}
        line = [f"{str(dtype).removeprefix('torch.'):>8}"]
        for k, ms in times.items():
            med = statistics.median(ms)
            line.append(f"{k} {med:.3f} ms {moved[k] / med / 1e6:.0f} GB/s")
        print(" | ".join(line))


if __name__ == "__main__":
    main()
