"""A background sampler of memory, utilisation and power, and the NVML handle it reads.

    nvml = open_nvml(torch_index=0)               # NvmlDevice; .notes says what it could not read
    sampler = Sampler(interval_ms=10, allocator=cuda_allocator_reader(0), nvml=nvml)
    sampler.start()
    sampler.phase = "forward"                     # the training loop labels what it is doing
    ...
    sampler.stop()
    sampler.write_csv("samples-sgdsai.csv")       # SAMPLE_COLUMNS, one row per tick

NVML (``nvidia-ml-py``, module ``pynvml``) is optional at every step: a missing library, an
``nvmlInit`` that fails (containers without the driver's NVML), a device that cannot be matched,
a MIG instance (no utilisation or power per instance), or a query the driver does not support
all degrade to ``None`` in the samples and a line in ``notes``; nothing here raises.

The CUDA device is mapped to its NVML handle by UUID, not by index: CUDA_VISIBLE_DEVICES and
CUDA_DEVICE_ORDER renumber CUDA devices but not NVML's. Memory is read with
``nvmlDeviceGetMemoryInfo_v2`` (``used`` excludes the driver's ``reserved``) where the driver has
it, else v1 (``used`` includes it); ``memory_api`` says which.

The sampler thread holds the GIL only to read the allocator counters and append a tuple: NVML
calls go through ctypes, which releases the GIL. ``benchmarks/sampler_overhead.py`` measures the
effect on step latency. ``sample()`` reads every source once and can be driven without the thread.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgdsai_cli.measure.devices import cuda_uuid

SAMPLE_COLUMNS = (
    "t_s",  # seconds since the sampler started
    "step",  # training step index (-1 before the first)
    "phase",  # forward | backward | optimizer_step | zero_grad | setup | idle
    "allocated_bytes",  # CUDA caching allocator: allocated now; CPU: live tensor bytes (when tracked)
    "reserved_bytes",  # CUDA caching allocator: reserved now
    "rss_bytes",  # this process's resident set size
    "nvml_used_bytes",  # NVML device memory used (whole device, every process)
    "nvml_reserved_bytes",  # NVML v2: memory the driver reserves (None with v1)
    "gpu_util_pct",  # NVML utilisation.gpu
    "power_w",  # NVML power usage
    "energy_mj",  # NVML total energy counter since driver load (millijoules)
)


def _uuid_key(uuid: str | None) -> str | None:
    """'GPU-AbC...' / 'MIG-...' / 'abc...' -> 'abc...' (lowercase, no prefix) for comparison."""
    if not uuid:
        return None
    u = str(uuid).strip().lower()
    for prefix in ("gpu-", "mig-"):
        if u.startswith(prefix):
            u = u[len(prefix):]
    return u


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlDevice:
    """One NVML handle (a GPU or a MIG instance) and safe readers for it.

    Every reader returns ``None`` when the query fails, and records why once in ``notes``.
    """

    def __init__(self, pynvml, handle, *, uuid: str, is_mig: bool, notes: list[str]):
        self._nvml = pynvml
        self.handle = handle
        self.uuid = uuid
        self.is_mig = is_mig
        self.notes = notes
        self._failed: set[str] = set()
        self.memory_api = "v2" if self._probe_v2() else "v1"
        if self.memory_api == "v1":
            notes.append("NVML memory info v2 unavailable: nvml used includes the driver's reserved memory (v1)")
        self.driver = self._call("driver", lambda: _decode(pynvml.nvmlSystemGetDriverVersion()))

    def _call(self, what: str, fn: Callable[[], Any]):
        if what in self._failed:
            return None
        try:
            return fn()
        except Exception as e:  # NVMLError_NotSupported, NoPermission, GpuIsLost, ...
            self._failed.add(what)
            where = "MIG instance" if self.is_mig else "device"
            self.notes.append(f"NVML {what} not readable on this {where}: {e.__class__.__name__}: {e}")
            return None

    def _probe_v2(self) -> bool:
        try:
            self._nvml.nvmlDeviceGetMemoryInfo(self.handle, version=self._nvml.nvmlMemory_v2)
            return True
        except Exception:
            return False

    def memory(self) -> tuple[int | None, int | None, int | None]:
        """(used, reserved, total) bytes; reserved is None with the v1 API."""
        if self.memory_api == "v2":
            m = self._call("memory", lambda: self._nvml.nvmlDeviceGetMemoryInfo(self.handle,
                                                                                 version=self._nvml.nvmlMemory_v2))
            return (None, None, None) if m is None else (int(m.used), int(m.reserved), int(m.total))
        m = self._call("memory", lambda: self._nvml.nvmlDeviceGetMemoryInfo(self.handle))
        return (None, None, None) if m is None else (int(m.used), None, int(m.total))

    def utilization_pct(self) -> float | None:
        u = self._call("utilization", lambda: self._nvml.nvmlDeviceGetUtilizationRates(self.handle))
        return None if u is None else float(u.gpu)

    def power_w(self) -> float | None:
        p = self._call("power", lambda: self._nvml.nvmlDeviceGetPowerUsage(self.handle))
        return None if p is None else p / 1000.0

    def energy_mj(self) -> int | None:
        e = self._call("energy", lambda: self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        return None if e is None else int(e)


def _import_pynvml():
    import pynvml

    return pynvml


def open_nvml(torch_index: int = 0, uuid: str | None = None) -> tuple[NvmlDevice | None, list[str]]:
    """Find the NVML handle of CUDA device ``torch_index`` (or of ``uuid``); never raises.

    Returns ``(device or None, notes)``. The UUID comes from torch's device properties when
    not given. A MIG instance is found among the MIG devices of each GPU.
    """
    notes: list[str] = []
    try:
        pynvml = _import_pynvml()
    except Exception as e:
        return None, [f"NVML unavailable: cannot import pynvml ({e.__class__.__name__}); install nvidia-ml-py"]
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return None, [f"NVML unavailable: nvmlInit failed ({e.__class__.__name__}: {e})"]
    if uuid is None:
        uuid = cuda_uuid(torch_index)
    want = _uuid_key(uuid)
    try:
        count = pynvml.nvmlDeviceGetCount()
        candidates = []
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            candidates.append((h, _decode(pynvml.nvmlDeviceGetUUID(h)), False))
            try:
                current, _ = pynvml.nvmlDeviceGetMigMode(h)
            except Exception:
                current = 0
            if current:
                for j in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except Exception:
                        continue
                    candidates.append((mh, _decode(pynvml.nvmlDeviceGetUUID(mh)), True))
    except Exception as e:
        return None, [f"NVML devices not listable ({e.__class__.__name__}: {e})"]
    if want is not None:
        for h, u, is_mig in candidates:
            if _uuid_key(u) == want:
                if is_mig:
                    notes.append("MIG instance: NVML utilisation, power and energy are per GPU, not per instance")
                return NvmlDevice(pynvml, h, uuid=u, is_mig=is_mig, notes=notes), notes
        notes.append(f"NVML has no device with UUID {uuid} (container or MIG renumbering): NVML figures omitted")
        return None, notes
    gpus = [c for c in candidates if not c[2]]
    if len(gpus) == 1:
        notes.append("CUDA device UUID unknown; NVML's only GPU assumed to be it")
        h, u, _ = gpus[0]
        return NvmlDevice(pynvml, h, uuid=u, is_mig=False, notes=notes), notes
    notes.append("CUDA device UUID unknown and several NVML devices: NVML figures omitted")
    return None, notes


def cuda_allocator_reader(torch_index: int) -> Callable[[], tuple[int, int]]:
    """A cheap reader of (allocated, reserved) current bytes from the caching allocator."""
    import torch

    raw = getattr(torch._C, "_cuda_memoryStats", None)

    def read() -> tuple[int, int]:
        if raw is not None:
            s = raw(torch_index)
            return s["allocated_bytes"]["all"]["current"], s["reserved_bytes"]["all"]["current"]
        return torch.cuda.memory_allocated(torch_index), torch.cuda.memory_reserved(torch_index)

    return read


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_STATM: dict[str, int | None] = {}  # pid -> fd kept open: a pread costs ~2 us, an open ~25 us


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux /proc; None elsewhere)."""
    pid = os.getpid()
    if _STATM.get("pid") != pid:  # first use, or a forked child: /proc/self was resolved at open
        try:
            fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            fd = None
        _STATM.update(pid=pid, fd=fd)
    fd = _STATM["fd"]
    if fd is None:
        return None
    try:
        return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class Sampler:
    """A daemon thread that appends one row of SAMPLE_COLUMNS every ``interval_ms``.

    ``allocator`` returns (allocated, reserved) bytes, or (live, None) on the CPU; ``nvml`` is an
    NvmlDevice or None. The training loop sets ``phase`` and ``step``; the thread only reads them.
    ``clock`` gives seconds (``t_s`` counts from its value at ``start``); ``tick()`` takes one
    sample without the thread.
    """

    def __init__(self, interval_ms: float = 10.0, *, allocator: Callable[[], tuple] | None = None,
                 nvml: NvmlDevice | None = None, power: bool = True,
                 clock: Callable[[], float] = time.perf_counter):
        if not interval_ms > 0:
            raise ValueError(f"interval_ms must be > 0, got {interval_ms!r}")
        self.interval_s = interval_ms / 1000.0
        self.allocator = allocator
        self.nvml = nvml
        self.power = power and nvml is not None
        self.phase = "setup"
        self.step = -1
        self.rows: list[tuple] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock = clock
        self._t0 = clock()

    def sample(self) -> tuple:
        """Read every source once; one row of SAMPLE_COLUMNS."""
        t = self._clock() - self._t0
        alloc = reserved = None
        if self.allocator is not None:
            try:
                alloc, reserved = self.allocator()
            except Exception as e:  # keep sampling the rest
                if not self.errors:
                    self.errors.append(f"allocator not readable: {e.__class__.__name__}: {e}")
        used = nv_reserved = util = power = energy = None
        if self.nvml is not None:
            used, nv_reserved, _ = self.nvml.memory()
            if self.power:
                util = self.nvml.utilization_pct()
                power = self.nvml.power_w()
                energy = self.nvml.energy_mj()
        return (round(t, 6), self.step, self.phase, alloc, reserved, rss_bytes(), used, nv_reserved, util, power,
                energy)

    def tick(self) -> tuple:
        """Take one sample and keep it (what the thread does every interval)."""
        row = self.sample()
        self.rows.append(row)
        return row

    def _run(self) -> None:
        next_t = self._clock()
        while not self._stop.is_set():
            self.tick()
            next_t += self.interval_s
            delay = next_t - self._clock()
            if delay < 0:  # fell behind (slow NVML query): skip ticks rather than burst
                next_t = self._clock()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> Sampler:
        self._t0 = self._clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sgdsai-sampler", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the sampling thread is running (between ``start`` and ``stop``)."""
        return self._thread is not None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.tick()  # a last row at the end state

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def column_max(self, column: str) -> float | None:
        i = SAMPLE_COLUMNS.index(column)
        values = [r[i] for r in self.rows if r[i] is not None]
        return max(values) if values else None

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows atomically as CSV with a header (empty cells for None)."""
        import io

        from sgdsai_cli.files import write_text_atomic

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(SAMPLE_COLUMNS)
        for r in self.rows:
            w.writerow(["" if v is None else v for v in r])
        return write_text_atomic(path, buf.getvalue())


def read_samples(path: str | os.PathLike):
    """A samples CSV as a pandas DataFrame (for plots)."""
    import pandas as pd

    return pd.read_csv(path)
