"""One optimizer's training run in this process: setup, the step loop, the activation probe.

The model in the requested precision on the device, one seeded synthetic batch (random tokens or
images, reused every step), then ``warmup_steps(warmup, device) + steps`` steps of four phases
(``phases``). Step 0 is the first optimizer step (state allocation, g-SNR): it is timed apart
(``first_step_ms``) and never the measured figure, whatever ``warmup`` says; the other warmup
steps are not timed; then ``steps`` measured steps. When there are two warmup steps or more, the
last one is the activation probe (``activation_probe_step``).

On the CPU a live-tensor tracker (``tracker.LiveTracker``) sees every tensor the run creates,
model build included. It costs Python time per op, so it runs over the first step and the
warmup steps only: the measured steps run untracked and their latency carries no tracking cost.
Memory is therefore read in the warmup steps, and a CPU run always has at least
``CPU_MIN_WARMUP`` of them (the first step, a steady step after it, the activation probe): a
smaller ``warmup`` is raised, and said in a note. On CUDA the allocator is read in every step, so
one warmup step (the first) is enough. ``steps`` and ``warmup`` are at most ``MAX_STEPS``.
A sampler thread (``sampler.Sampler``) records memory, utilisation and power over the whole run,
labelled with the phase and step (``enter``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sgdsai_cli.measure.job import Job
from sgdsai_cli.measure.limits import MAX_STEPS, check_steps_and_warmup
from sgdsai_cli.measure.phases import PHASES, PhaseRecorder
from sgdsai_cli.measure.storage import unique_bytes
from sgdsai_cli.measure.tracker import LiveTracker
from sgdsai_cli.precision import resolve_precision

SNAPSHOT_MAX_ENTRIES = 100_000
CPU_MIN_WARMUP = 3  # the first step, a steady tracked step, the activation probe
MAX_GROWING_STEPS = 4  # tracked steps added at most while the optimizer state still grows
__all__ = ["CPU_MIN_WARMUP", "MAX_STEPS", "ProgressEvent", "TrainingRun", "warmup_note", "warmup_steps"]


def warmup_steps(warmup: int, device_type: str) -> int:
    """Steps run before the measured ones: ``warmup``, at least the first step (CPU: ``CPU_MIN_WARMUP``)."""
    return max(warmup, 1 if device_type == "cuda" else CPU_MIN_WARMUP)


def warmup_note(warmup: int, device_type: str) -> str | None:
    """What a run says when its warmup was raised (None when it was not)."""
    n = warmup_steps(warmup, device_type)
    if n <= max(warmup, 1):
        return None
    return (f"warmup {warmup} raised to {n}: on the CPU memory is read over a steady step and the activation "
            "probe after the first step, before the measured steps")

ProgressEvent = Callable[..., None]  # (event, **fields): the child's progress lines


class TrainingRun:
    """State of one run while it goes: the model, the optimizer, what was recorded so far."""

    def __init__(self, job: Job, on_event: ProgressEvent | None = None):
        self.job = job
        self.spec = job.spec
        self.model_spec = job.model_spec
        self.precision = resolve_precision(self.spec.precision)
        self.device = torch.device(self.spec.device)
        self.is_cuda = self.device.type == "cuda"
        self.on_event = on_event
        self.notes: list[str] = []
        self.phase = "setup"
        self.step = -1
        self.tracker: LiveTracker | None = None
        self.sampler = None
        self.nvml = None
        self.recorder: PhaseRecorder | None = None
        self.times: dict[str, list[float]] = {p: [] for p in PHASES}
        self.first_step_ms: dict[str, float] = {}
        self.model = self.batch = self.optimizer = self.impl = None
        self.energy_mj: tuple[int | None, int | None] = (None, None)
        self.grad_bytes: int | None = None  # measured after the first backward
        self.batch_bytes = 0
        self.activation_probe: int | None = None  # from activation_probe_step (warmup >= 2)
        self.state_grown: dict[int, int] = {}  # step -> optimizer state bytes that step created

    def state_bytes(self) -> int:
        """Bytes the optimizer's state holds now (each storage once)."""
        from sgdsai_cli.measure.storage import state_tensors

        return unique_bytes(state_tensors(self.optimizer))

    # -- labels -----------------------------------------------------------------------------

    def enter(self, phase: str) -> None:
        """Label what the run does now (for the sampler's rows and an out-of-memory report)."""
        self.phase = phase
        if self.sampler is not None:
            self.sampler.phase = phase

    def _phase(self, phase: str, fn, timed: bool, record_memory: bool):
        self.enter(phase)
        return self.recorder.run(phase, fn, self.step, timed=timed, record_memory=record_memory)

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        from sgdsai_cli.models import batch_tensors, build_model, make_batch, trainable_named_parameters
        from sgdsai_cli.optim.registry import build_optimizer

        if self.is_cuda:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            torch.cuda.set_device(index)
            self.device = torch.device("cuda", index)
        else:
            self.tracker = LiveTracker().start()
        self.recorder = PhaseRecorder(self.device, self.tracker)
        self._start_sampler()
        self.enter("setup")
        torch.manual_seed(self.spec.seed)
        self.model = build_model(self.model_spec, device=self.device, dtype=self.precision.param_dtype)
        gen = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        self.batch = make_batch(self.model_spec, self.spec.batch_size, self.spec.seq_len, self.device, generator=gen,
                                model=self.model)
        self.batch_bytes = unique_bytes(batch_tensors(self.batch))
        self.optimizer, self.impl = build_optimizer(self.job.optimizer, trainable_named_parameters(self.model),
                                                    self.precision.master_dtype)

    def _start_sampler(self) -> None:
        from sgdsai_cli.measure.sampler import Sampler, cuda_allocator_reader, open_nvml

        if self.is_cuda:
            self.nvml, nv_notes = open_nvml(self.device.index)
            self.notes.extend(nv_notes)
        if not self.job.sample_interval_ms or not self.job.sampler:
            return
        if self.is_cuda:
            allocator = cuda_allocator_reader(self.device.index)
        else:
            tracker = self.tracker
            allocator = lambda: (tracker.live if tracker.active else None, None)
        self.sampler = Sampler(self.job.sample_interval_ms, allocator=allocator, nvml=self.nvml)
        self.sampler.start()

    def stop(self) -> None:
        """Stop the sampler thread and the tracker (safe to call more than once)."""
        if self.sampler is not None and self.sampler.running:
            self.sampler.stop()
        if self.tracker is not None:
            self.tracker.stop()

    # -- one step ---------------------------------------------------------------------------

    def forward(self):
        from sgdsai_cli.models import training_loss

        ac = self.precision.autocast_dtype
        if ac is not None:
            with torch.autocast(device_type=self.device.type, dtype=ac):
                return training_loss(self.model_spec, self.model, self.batch)
        return training_loss(self.model_spec, self.model, self.batch)

    def train_step(self, timed: bool, record_memory: bool) -> None:
        loss = self._phase("forward", self.forward, timed, record_memory)
        self._phase("backward", loss.backward, timed, record_memory)
        del loss
        if self.grad_bytes is None:
            self.grad_bytes = unique_bytes(p.grad for p in self.model.parameters() if p.grad is not None)
        state_before = self.state_bytes()
        self._phase("optimizer_step", self.optimizer.step, timed, record_memory)
        self.state_grown[self.step] = self.state_bytes() - state_before
        self._phase("zero_grad", lambda: self.optimizer.zero_grad(set_to_none=True), timed, record_memory)

    def activation_probe_step(self) -> None:
        """An untimed step that measures the activation peak as the estimate defines it.

        Live bytes above parameters, optimizer state and the gradients accumulated so far: the
        peak is read and reset at every gradient's post-accumulate hook, and each interval's
        peak is taken less the gradients noted before it (a gradient counts as activation until
        its hook fires, as in the estimate's trace).
        """
        rec = self.recorder
        base = rec.allocated_now() - self.batch_bytes
        acc = {"grads": 0, "act": 0}

        def hook(p) -> None:
            peak = rec.read_reset_peak()
            acc["act"] = max(acc["act"], peak - base - acc["grads"])
            acc["grads"] += p.grad.untyped_storage().nbytes()

        handles = [p.register_post_accumulate_grad_hook(hook) for p in self.model.parameters() if p.requires_grad]
        try:
            rec.read_reset_peak()
            self.enter("forward")
            loss = self.forward()
            self.enter("backward")
            loss.backward()
            del loss
            acc["act"] = max(acc["act"], rec.read_reset_peak() - base - acc["grads"])
        finally:
            for h in handles:
                h.remove()
        self.enter("optimizer_step")
        state_before = self.state_bytes()
        self.optimizer.step()
        self.state_grown[self.step] = self.state_bytes() - state_before
        self.enter("zero_grad")
        self.optimizer.zero_grad(set_to_none=True)
        self.activation_probe = acc["act"]

    # -- the loop ---------------------------------------------------------------------------

    def _say(self, event: str, **fields) -> None:
        if self.on_event is not None:
            self.on_event(event, **fields)

    def _begin_measured(self, snapshot_path: str | None) -> None:
        """Entering the measured steps: tracking off, the snapshot on, the energy counter read."""
        if self.tracker is not None:
            self.tracker.stop()
        if snapshot_path:
            torch.cuda.memory._record_memory_history(max_entries=SNAPSHOT_MAX_ENTRIES)
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
        self.energy_mj = (self.nvml.energy_mj() if self.nvml else None, None)

    def _still_growing(self, i: int, n_warm: int) -> bool:
        """On the CPU, whether step ``i`` was the tracked steady step and its optimizer step still created
        state (SGD-SaI defers a tensor whose first gradients are all zero, such as LoRA's A while B is zero),
        so memory must be read over one more step. At most ``MAX_GROWING_STEPS`` are added; then a note."""
        if self.is_cuda or i != n_warm - 2 or i < 1 or not self.state_grown.get(i):
            return False
        added = n_warm - warmup_steps(self.spec.warmup, self.device.type)
        if added >= MAX_GROWING_STEPS:
            self.notes.append(f"optimizer state still grew at step {i}: memory read before it was complete")
            return False
        return True

    def train(self) -> None:
        check_steps_and_warmup(self.spec.steps, self.spec.warmup)
        n_warm = warmup_steps(self.spec.warmup, self.device.type)
        note = warmup_note(self.spec.warmup, self.device.type)
        if note:
            self.notes.append(note)
        total = n_warm + self.spec.steps
        self._say("start", total=total, warmup=n_warm, steps=self.spec.steps)
        snapshot_path = self.job.snapshot_path if self.is_cuda else None
        if self.job.snapshot_path and not self.is_cuda:
            self.notes.append("snapshot needs CUDA: no memory snapshot on the CPU")
        i = 0
        while i < total:
            self.step = i
            if self.sampler is not None:
                self.sampler.step = i
            if i == n_warm:
                self._begin_measured(snapshot_path)
            if i == n_warm - 1 and i >= 1:  # the last warmup step, when it is not the first step
                self.activation_probe_step()
            else:
                self.train_step(timed=i == 0 or i >= n_warm, record_memory=self.recorder.measuring())
            if i == 0:
                self.first_step_ms = {p: v[0] for p, v in self.recorder.collect_times().items()}
            if self._still_growing(i, n_warm):  # the tracked steady step created state: track one more
                n_warm, total = n_warm + 1, total + 1
            self._say("step", step=i + 1, total=total, measured=i >= n_warm)
            i += 1
        for p, v in self.recorder.collect_times().items():  # synchronizes
            self.times[p].extend(v)
        self.energy_mj = (self.energy_mj[0], self.nvml.energy_mj() if self.nvml else None)
        if snapshot_path:
            torch.cuda.memory._dump_snapshot(snapshot_path)
            torch.cuda.memory._record_memory_history(enabled=None)
        self.phase = "done"
        if self.sampler is not None:
            self.sampler.phase = "idle"
