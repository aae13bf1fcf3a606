"""SGD-SaI's one-pass CPU kernel: C source, build with the system compiler, on-disk cache, ctypes calls.

The kernel reads theta, g and m once and writes theta and m once (20 bytes per fp32 parameter,
the minimum), for fp32, bf16 and (where the compiler has ``_Float16``) fp16. It is a small C file
compiled in milliseconds with no torch headers and loaded with ctypes; ctypes drops the GIL during
the call, and OpenMP shares torch's runtime (libgomp is already loaded by torch), so it uses
``torch.get_num_threads()`` threads.

Built on first use and cached in ``kernels`` of the tool's cache folder (``sgdsai_cli.cache``:
``$SGDSAI_CACHE_DIR``, ``$XDG_CACHE_HOME/sgdsai`` or ``~/.cache/sgdsai``). Without a home folder
(``HOME=/nonexistent`` is never created), or where that folder cannot be written, a per-user temporary
folder is used instead. The cache key covers the source, the compiler and the CPU, so a
``-march=native`` build is reused only where it runs. ``SGDSAI_NO_CC=1`` disables the kernel.
The outcome (library or error) is kept in ``kernel_cache.KERNELS``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

from sgdsai_cli.cache import cache_root
from sgdsai_cli.optim.kernel_cache import KERNELS

_C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <stddef.h>

#define PAR_MIN 32768  /* below this many elements one thread is faster */

static inline float bf16_to_f(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t f_to_bf16(float f) {
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);  /* round to nearest even, as torch does */
  return (uint16_t)(u >> 16);
}

/* One tensor's update (m == NULL: the direct one along g) under the loop pragma given. */
#define UPDATE(LOOP_PRAGMA, T, LOAD, STORE)                                                      \
  if (m) {                                                                                       \
    _Pragma(LOOP_PRAGMA)                                                                         \
    for (int64_t i = 0; i < n; i++) {                                                            \
      T ms = STORE(mu * LOAD(m[i]) + omm * LOAD(g[i]));                                          \
      m[i] = ms;                                                                                 \
      p[i] = STORE(decay * LOAD(p[i]) - step * LOAD(ms));                                        \
    }                                                                                            \
  } else {                                                                                       \
    _Pragma(LOOP_PRAGMA)                                                                         \
    for (int64_t i = 0; i < n; i++) p[i] = STORE(decay * LOAD(p[i]) - step * LOAD(g[i]));        \
  }

/* Many tensors in one call and one parallel region: each large tensor is split across the
   threads (no barrier between tensors: they are independent), each small one runs whole on
   whichever thread gets to it first. m[t] == NULL: the direct update along g[t]. */
#define DEFINE_MULTI(NAME, T, LOAD, STORE)                                                       \
void NAME(int64_t count, T** pp, T** gg, T** mm, const int64_t* nn, const float* ss,             \
          float mu, float omm, float decay) {                                                    \
  _Pragma("omp parallel")                                                                        \
  for (int64_t t = 0; t < count; t++) {                                                          \
    T* restrict p = pp[t]; const T* restrict g = gg[t]; T* restrict m = mm[t];                   \
    const int64_t n = nn[t]; const float step = ss[t];                                           \
    if (n >= PAR_MIN) {                                                                          \
      UPDATE("omp for simd schedule(static) nowait", T, LOAD, STORE)                             \
    } else {                                                                                     \
      _Pragma("omp single nowait")                                                               \
      { UPDATE("omp simd", T, LOAD, STORE) }                                                     \
    }                                                                                            \
  }                                                                                              \
}

#define ID(x) (x)
DEFINE_MULTI(sgdsai_multi_f32, float, ID, ID)
DEFINE_MULTI(sgdsai_multi_bf16, uint16_t, bf16_to_f, f_to_bf16)
#ifdef __FLT16_MAX__
#define H2F(x) ((float)(x))
#define F2H(x) ((_Float16)(x))
DEFINE_MULTI(sgdsai_multi_f16, _Float16, H2F, F2H)
int sgdsai_has_f16(void) { return 1; }
#else
int sgdsai_has_f16(void) { return 0; }
#endif
int sgdsai_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}
"""

C_DTYPES = {torch.float32: "sgdsai_multi_f32", torch.bfloat16: "sgdsai_multi_bf16", torch.float16: "sgdsai_multi_f16"}
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3"],
)


class CpuKernel:
    """The loaded C library: ``run_many`` updates contiguous CPU tensors of one dtype in place."""

    def __init__(self, lib, path: Path, flags: list[str], *, built: bool = False, load_ms: float | None = None):
        self.path = path
        self.flags = flags
        self.built = built  # compiled in this process (False: loaded from the cache)
        self.load_ms = load_ms  # build (or cache lookup) and load time
        self.openmp = bool(lib.sgdsai_openmp())
        self._fns = {}
        for dtype, name in C_DTYPES.items():
            if dtype == torch.float16 and not lib.sgdsai_has_f16():
                continue
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 5 + [ctypes.c_float] * 3
            fn.restype = None
            self._fns[dtype] = fn
        self._lib = lib  # keep the library loaded

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in self._fns

    def run_many(self, ps: list[Tensor], gs: list[Tensor], ms: list[Tensor | None], steps: list[float],
                 mu: float, decay: float) -> None:
        """Update tensors of one supported dtype in one call (one OpenMP region for all).

        ``ms[t] is None``: the direct update ``theta = decay*theta - steps[t]*g``; else the momentum
        update ``m = mu*m + (1-mu)*g; theta = decay*theta - steps[t]*m``.
        """
        if not ps:
            return
        count = len(ps)
        ptrs = ctypes.c_void_p * count
        self._fns[ps[0].dtype](
            count, ptrs(*[p.data_ptr() for p in ps]), ptrs(*[g.data_ptr() for g in gs]),
            ptrs(*[None if m is None else m.data_ptr() for m in ms]),
            (ctypes.c_int64 * count)(*[p.numel() for p in ps]), (ctypes.c_float * count)(*steps),
            mu, 1.0 - mu, decay)


def c_compiler() -> str | None:
    """$CC, else cc/gcc/clang on PATH; ``SGDSAI_NO_CC=1`` disables the CPU kernel."""
    if os.environ.get("SGDSAI_NO_CC"):
        return None
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    """``kernels`` in the tool's cache folder (``sgdsai_cli.cache``), else a per-user temp folder."""
    root = cache_root()
    return root / "kernels" if root is not None else _fallback_dir()


def _fallback_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"sgdsai-kernels-{os.getuid()}"


def _machine_key(compiler: str) -> str:
    """Source, compiler and CPU identity: a cached -march=native build is reused only where it runs."""
    parts = [_C_SOURCE, compiler, str(_FLAG_SETS), torch.__version__]
    try:
        parts.append(subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            parts.extend(line for line in f if line.startswith(("flags", "model name")))
    except OSError:
        parts.append(platform.processor())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _build(compiler: str, out_dir: Path, key: str) -> tuple[Path, list[str], bool]:
    """Compile the kernel library into ``out_dir`` (atomically); try simpler flags if needed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        src = Path(tmp) / "sgdsai_kernel.c"
        src.write_text(_C_SOURCE)
        last = ""
        for flags in _FLAG_SETS:
            target = out_dir / f"sgdsai_kernel_{key}_{len(flags)}.so"
            if target.exists():
                return target, flags, False
            built = Path(tmp) / target.name
            cmd = [compiler, *flags, "-shared", "-fPIC", "-std=c11", str(src), "-o", str(built)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                try:
                    ctypes.CDLL(str(built))
                except OSError as e:
                    last = str(e)
                    continue
                os.replace(built, target)
                return target, flags, True
            last = proc.stderr.strip().splitlines()[-1:] or [""]
            last = last[0]
        raise RuntimeError(f"the C compiler failed: {last}")


def cpu_kernel() -> CpuKernel | None:
    """The CPU kernels, built on first use (about 0.2 s) and cached on disk; None where unavailable.

    ``cpu_kernel_error()`` says why it is None. Tried once per process (thread-safe).
    """
    cache = KERNELS
    if cache.cpu_tried:
        return cache.cpu
    with cache.lock:
        if not cache.cpu_tried:
            try:
                cache.cpu = _load()
            except Exception as e:  # any failure: quietly use the eager paths
                cache.cpu, cache.cpu_error = None, f"{type(e).__name__}: {e}"
            cache.cpu_tried = True
    return cache.cpu


def _load() -> CpuKernel:
    """Build (or find in the cache) and load the library; RuntimeError or OSError when it cannot."""
    compiler = c_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (set CC, or install gcc or clang)")
    t0 = time.perf_counter()
    key = _machine_key(compiler)
    try:
        path, flags, built = _build(compiler, _cache_dir(), key)
    except OSError:
        path, flags, built = _build(compiler, _fallback_dir(), key)
    lib = ctypes.CDLL(str(path))
    return CpuKernel(lib, path, flags, built=built, load_ms=(time.perf_counter() - t0) * 1e3)


def cpu_kernel_error() -> str | None:
    """Why ``cpu_kernel()`` returned None (None if it loaded or was not tried)."""
    return KERNELS.cpu_error
