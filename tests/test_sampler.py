"""The sampler thread and the NVML handle: fake NVML modules exercise every degraded path."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from sgdsai_cli.measure import sampler as smp
from sgdsai_cli.measure.sampler import SAMPLE_COLUMNS, NvmlDevice, Sampler, open_nvml


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


def fake_pynvml(gpus: list[dict], *, v2: bool = True, init_error: bool = False) -> types.SimpleNamespace:
    """A pynvml stand-in. Each gpu: {"uuid", "used", "mig": [{"uuid", "used"}], "power": bool}."""
    handles = {}
    for g in gpus:
        handles[g["uuid"]] = g
        for m in g.get("mig", []):
            handles[m["uuid"]] = {**m, "is_mig": True}

    def init():
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def memory(h, version=None):
        if version is not None and not v2:
            raise NotSupported()
        used = h["used"]
        if version is not None:
            return types.SimpleNamespace(used=used, reserved=300 << 20, total=80 << 30, free=0)
        return types.SimpleNamespace(used=used + (300 << 20), total=80 << 30, free=0)

    def mig_handle(h, j):
        migs = h.get("mig", [])
        if j >= len(migs):
            raise NVMLError("Not Found")
        return handles[migs[j]["uuid"]]

    def needs_gpu(value):
        def read(h):
            if h.get("is_mig") or not h.get("power", True):
                raise NotSupported()
            return value

        return read

    return types.SimpleNamespace(
        nvmlInit=init,
        nvmlMemory_v2=0x02000028,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: gpus[i],
        nvmlDeviceGetUUID=lambda h: h["uuid"].encode(),
        nvmlDeviceGetMigMode=lambda h: (1 if h.get("mig") else 0, 0),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUtilizationRates=needs_gpu(types.SimpleNamespace(gpu=87, memory=40)),
        nvmlDeviceGetPowerUsage=needs_gpu(412_000),
        nvmlDeviceGetTotalEnergyConsumption=needs_gpu(123_456_789),
        nvmlSystemGetDriverVersion=lambda: b"575.57.08",
    )


GPUS = [
    {"uuid": "GPU-aaaa1111-0000-0000-0000-000000000000", "used": 1 << 30},
    {"uuid": "GPU-bbbb2222-0000-0000-0000-000000000000", "used": 2 << 30,
     "mig": [{"uuid": "MIG-cccc3333-0000-0000-0000-000000000000", "used": 3 << 30}]},
]


def use(monkeypatch, module) -> None:
    monkeypatch.setattr(smp, "_import_pynvml", lambda: module)


@pytest.mark.parametrize(
    "uuid, key",
    [
        ("GPU-AbCd-12", "abcd-12"),
        ("MIG-abcd-12", "abcd-12"),
        ("abcd-12", "abcd-12"),
        (None, None),
        ("", None),
    ],
)
def test_uuid_key(uuid, key):
    assert smp._uuid_key(uuid) == key


def test_nvml_import_failure_is_a_note(monkeypatch):
    def fail():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(smp, "_import_pynvml", fail)
    dev, notes = open_nvml(0, uuid="GPU-aaaa1111-0000-0000-0000-000000000000")
    assert dev is None
    assert notes == ["NVML unavailable: cannot import pynvml (ImportError); install nvidia-ml-py"]


def test_nvml_init_failure_is_a_note(monkeypatch):
    use(monkeypatch, fake_pynvml(GPUS, init_error=True))
    dev, notes = open_nvml(0, uuid=GPUS[0]["uuid"])
    assert dev is None
    assert notes == ["NVML unavailable: nvmlInit failed (NVMLError: Driver Not Loaded)"]


@pytest.mark.parametrize(
    "torch_uuid, expect_used, is_mig",
    [
        # torch's UUID without the prefix and in another case still matches (CUDA_VISIBLE_DEVICES reorders)
        ("bbbb2222-0000-0000-0000-000000000000", 2 << 30, False),
        ("GPU-AAAA1111-0000-0000-0000-000000000000", 1 << 30, False),
        ("MIG-cccc3333-0000-0000-0000-000000000000", 3 << 30, True),
    ],
)
def test_cuda_device_maps_to_nvml_by_uuid(monkeypatch, torch_uuid, expect_used, is_mig):
    use(monkeypatch, fake_pynvml(GPUS))
    dev, notes = open_nvml(0, uuid=torch_uuid)
    assert isinstance(dev, NvmlDevice)
    assert dev.is_mig is is_mig
    assert dev.memory_api == "v2"
    assert dev.memory() == (expect_used, 300 << 20, 80 << 30)
    assert dev.driver == "575.57.08"
    if is_mig:  # per-instance utilisation and power are not supported: None and a note, no crash
        assert dev.utilization_pct() is None and dev.power_w() is None and dev.energy_mj() is None
        assert any("MIG instance" in n for n in notes)
        assert any(n.startswith("NVML power not readable on this MIG instance") for n in notes)
    else:
        assert dev.utilization_pct() == 87.0 and dev.power_w() == 412.0 and dev.energy_mj() == 123_456_789


def test_unknown_uuid_degrades(monkeypatch):
    use(monkeypatch, fake_pynvml(GPUS))
    dev, notes = open_nvml(0, uuid="GPU-ffff")
    assert dev is None
    assert notes == ["NVML has no device with UUID GPU-ffff (container or MIG renumbering): NVML figures omitted"]


def test_memory_info_v1_fallback(monkeypatch):
    use(monkeypatch, fake_pynvml(GPUS, v2=False))
    dev, notes = open_nvml(0, uuid=GPUS[0]["uuid"])
    assert dev.memory_api == "v1"
    used, reserved, total = dev.memory()
    assert (used, reserved, total) == ((1 << 30) + (300 << 20), None, 80 << 30)  # v1 used includes reserved
    assert any("v2 unavailable" in n for n in notes)


class FakeClock:
    """Seconds that advance only when told to."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_sampler_rows_phases_and_csv(tmp_path, monkeypatch):
    """The sampler driven tick by tick on a fake clock: rows, labels, maxima and the CSV, exactly."""
    use(monkeypatch, fake_pynvml(GPUS))
    dev, _ = open_nvml(0, uuid=GPUS[0]["uuid"])
    counter = {"n": 0}

    def allocator():
        counter["n"] += 1
        return 1000 * counter["n"], 4096

    clock = FakeClock()
    s = Sampler(5, allocator=allocator, nvml=dev, clock=clock)
    for phase, step in (("setup", -1), ("forward", 0), ("forward", 0), ("backward", 0), ("optimizer_step", 1)):
        s.phase, s.step = phase, step
        clock.t += 0.005
        s.tick()
    assert len(s.rows) == 5
    assert all(len(r) == len(SAMPLE_COLUMNS) for r in s.rows)
    col = {name: i for i, name in enumerate(SAMPLE_COLUMNS)}
    assert [r[col["phase"]] for r in s.rows] == ["setup", "forward", "forward", "backward", "optimizer_step"]
    assert [r[col["step"]] for r in s.rows] == [-1, 0, 0, 0, 1]
    assert [r[col["t_s"]] for r in s.rows] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.025])
    assert s.column_max("allocated_bytes") == 5000
    assert s.column_max("nvml_used_bytes") == 1 << 30
    assert s.column_max("power_w") == 412.0
    path = s.write_csv(tmp_path / "samples.csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(SAMPLE_COLUMNS)
    assert len(frame) == 5
    assert frame["t_s"].is_monotonic_increasing
    assert frame["reserved_bytes"].eq(4096).all()
    assert frame["nvml_reserved_bytes"].eq(300 << 20).all()


def test_sampler_thread_starts_and_stops():
    """The thread's rows, whatever their number: stop() always adds the end state's row."""
    s = Sampler(5)
    assert not s.running
    s.start()
    assert s.running
    s.stop()
    assert not s.running
    assert len(s.rows) >= 1
    named = dict(zip(SAMPLE_COLUMNS, s.rows[-1], strict=True))
    assert named["rss_bytes"] > 10 << 20  # this Python process
    assert named["allocated_bytes"] is None and named["nvml_used_bytes"] is None and named["power_w"] is None
    assert s.column_max("nvml_used_bytes") is None


def test_allocator_failure_keeps_sampling():
    def broken():
        raise RuntimeError("allocator gone")

    s = Sampler(5, allocator=broken)
    s.tick()
    s.tick()
    assert len(s.rows) == 2 and all(r[SAMPLE_COLUMNS.index("rss_bytes")] for r in s.rows)
    assert s.errors == ["allocator not readable: RuntimeError: allocator gone"]  # said once


@pytest.mark.parametrize("interval", [0, -1.0])
def test_bad_interval(interval):
    with pytest.raises(ValueError):
        Sampler(interval)


def test_worker_nvml_absent_path(monkeypatch):
    """A CPU run never needs NVML; on CUDA an absent NVML is a note (checked on GPU by gpu tests)."""
    from sgdsai_cli.measure import worker
    from sgdsai_cli.measure.job import Job
    from sgdsai_cli.models import resolve_model
    from sgdsai_cli.results import ProfileSpec

    def fail():
        raise ImportError("no pynvml")

    monkeypatch.setattr(smp, "_import_pynvml", fail)
    spec = ProfileSpec(model="tiny-vit", device="cpu", batch_size=2, warmup=1, steps=1)
    run = worker.run_job(Job(spec, resolve_model("tiny-vit"), "sgd", sample_interval_ms=5)).run
    assert run.status == "ok"
    assert run.memory.nvml_used_peak_bytes is None
