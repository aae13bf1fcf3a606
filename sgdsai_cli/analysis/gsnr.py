"""``gsnr()``: the per-tensor learning-rate scales SGD-SaI gives a model, and whether they stay put.

At step 0 the model takes one batch, and the g-SNR of every parameter tensor's gradient is computed
by the very function ``SGDSaI`` uses (``sgdsai_cli.optim.gsnr_stats``). The model then trains with
the chosen optimizer on fresh batches and the g-SNR of that step's gradient is recomputed at each
listed step (same function), which tests the paper's claim that the values hardly move.

    result = gsnr("tiny-gpt2", device="cpu", steps=[0, 10, 50])   # a GsnrResult; .to_dict() is the document

Text models train on bytes of real text (``models.corpus.load_corpus``); ViT presets on seeded
synthetic images (the document's ``data.kind`` says which).

Identity used for checks: with the biased variance, ``gsnr = sqrt(n-1) * sqrt(1 + mean^2/var)``
(eps aside), so ``gsnr / sqrt(n-1) >= 1`` for every tensor with more than one element and a
non-constant gradient.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sgdsai_cli.analysis.gsnr_summary import degenerate_list, stability, summarise
from sgdsai_cli.errors import BadInput, EnvironmentUnavailable, error_text
from sgdsai_cli.optim import SGDSaI, gsnr_stats
from sgdsai_cli.optim.registry import build_optimizer, resolve_optimizer
from sgdsai_cli.precision import resolve_precision
from sgdsai_cli.progress import Progress, ProgressCallback, report_to
from sgdsai_cli.results import Document, Environment

DEFAULT_STEPS = (0, 10, 50)
DEFAULT_BATCH_SIZE = 4
DEFAULT_SEQ_LEN = 128
# SGD-SaI's step is lr * gsnr * m with gsnr ~ sqrt(numel) ~ ||g|| / std(g), so a tensor's per-element
# step has an RMS of about lr * ||g||: the whole tensor's gradient norm (7.9 for GPT-2's tied
# embedding at init). Measured on GPT-2 (fp32, batch 4 x 128 bytes, 20 steps): the official 1e-2
# gives a NaN loss, 1e-3 a loss of ~500 and 1e-4 ~80 (from 10.7); 1e-5 trains (10.9 -> ~4 on a
# 2-layer GPT-2). Used for every optimizer, so runs compare at one learning rate.
DEFAULT_LR = 1e-5
MAX_STEP = 100_000


class GsnrResult(Document):
    """A g-SNR run: ``spec``, and a body of model, data, training, tensors, summary, degenerate, stability."""

    kind = "gsnr"


def parse_steps(text: str | Sequence[int]) -> list[int]:
    """'0,10,50' -> [0, 10, 50]: non-negative integers, strictly increasing; 0 is always added.

    Step k is the gradient after k optimizer steps; step 0 (the gradient SGDSaI takes its g-SNR
    from) is always measured, listed or not.
    """
    def bad(why: str) -> BadInput:
        return BadInput(f"bad steps {str(text)!r} ({why})", field="steps", value=text)

    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise bad("use a comma-separated list such as 0,10,50")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise bad("steps are whole numbers, such as 0,10,50") from None
    else:
        values = [int(v) for v in text]
        text = ",".join(str(v) for v in values)
    if not values:
        raise BadInput("bad steps: the list is empty", field="steps")
    if any(v < 0 for v in values):
        raise bad("steps must be 0 or more")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise bad("list each step once, in increasing order")
    if values[-1] > MAX_STEP:
        raise bad(f"at most {MAX_STEP} steps")
    return values if values[0] == 0 else [0, *values]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def measure_gsnr(params: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """g-SNR of each parameter's current ``.grad`` via ``optim.gsnr_stats``; one host sync in all.

    Each entry: ``gsnr`` (None when there is no gradient, an all-zero one, or a non-finite
    value), ``grad_norm`` and ``degenerate`` (None, or a key of DEGENERATE_ACTIONS).
    """
    have = [p for p in params if p.grad is not None]
    host: dict[int, tuple[float, float, bool]] = {}
    if have:
        stats = [gsnr_stats(p.grad) for p in have]
        by_device: dict[torch.device, list[int]] = {}
        for i, p in enumerate(have):
            by_device.setdefault(p.device, []).append(i)
        for idx in by_device.values():
            packed = torch.stack([torch.stack([stats[i][0].float(), stats[i][1].float(), stats[i][2].float()])
                                  for i in idx]).tolist()
            for i, (g, n, d) in zip(idx, packed, strict=False):
                host[id(have[i])] = (g, n, bool(d))
    out = []
    for p in params:
        if id(p) not in host:
            out.append({"gsnr": None, "grad_norm": None, "degenerate": "no_gradient"})
            continue
        g, n, d = host[id(p)]
        if n == 0.0:
            out.append({"gsnr": None, "grad_norm": 0.0, "degenerate": "zero"})
        elif p.numel() <= 1:
            out.append({"gsnr": _finite(g), "grad_norm": _finite(n), "degenerate": "single_element"})
        elif d:
            out.append({"gsnr": _finite(g), "grad_norm": _finite(n), "degenerate": "constant"})
        else:
            out.append({"gsnr": _finite(g), "grad_norm": _finite(n), "degenerate": None})
    return out


def _batches(spec, corpus, batch_size: int, seq_len: int | None, dev: torch.device, seed: int):
    """An endless iterator of seeded training batches (bytes of text, or synthetic images)."""
    from sgdsai_cli.models import make_batch

    gen = torch.Generator().manual_seed(seed)
    while True:
        if corpus is None:
            yield make_batch(spec, batch_size, seq_len or 1, dev, generator=gen)
        else:
            yield corpus.batch(batch_size, seq_len, spec.config.vocab_size, generator=gen, device=dev)


def _compare_state(opt: SGDSaI, params, init: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare SGDSaI's stored g-SNR after its first step with the step-0 values measured here."""
    compared = mismatched = 0
    for p, rec in zip(params, init, strict=False):
        state = opt.state.get(p, {})
        if "gsnr" not in state:
            continue
        compared += 1
        if rec["gsnr"] is None or float(state["gsnr"]) != rec["gsnr"]:
            mismatched += 1
    return {"compared": compared, "mismatched": mismatched, "equal": compared > 0 and mismatched == 0}


@dataclass
class _Setup:
    """A checked g-SNR request."""

    spec: Any  # the ModelSpec
    precision: Any
    optimizer: str
    steps: list[int]
    batch_size: int
    seq_len: int | None
    seed: int
    lr: float | None
    data: str | os.PathLike | None
    device: torch.device


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInput(f"bad {name} {value!r} (must be a positive integer)", field=name, value=value)
    return value


def _check(model, device, precision, steps, optimizer, data, batch_size, seq_len, seed, lr) -> _Setup:
    """Every input checked before any work (BadInput / EnvironmentUnavailable carrying the field)."""
    from sgdsai_cli.measure.devices import resolve_device
    from sgdsai_cli.models import check_addressable, max_positions, resolve_model

    spec = resolve_model(model)
    if spec.family in ("hf", "factory"):  # its text corpus feeds our own token layout (targets shifted here)
        what = "built by transformers" if spec.family == "hf" else "your own factory"
        raise BadInput(f"gsnr trains the native models (presets, gpt2/llama/vit config.json); '{spec.name}' is {what}",
                       field="model", value=spec.name)
    prec = resolve_precision(precision)
    resolve_optimizer(optimizer)
    step_list = parse_steps(steps)
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                           or lr <= 0):
        raise BadInput(f"bad lr {lr!r} (must be a positive number)", field="lr", value=lr)
    _positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise BadInput(f"bad seed {seed!r} (must be an integer from -2**63 to 2**64-1)", field="seed", value=seed)
    if spec.family != "vit":
        limit = max_positions(spec)
        seq_len = _positive_int("seq_len", min(DEFAULT_SEQ_LEN, limit) if seq_len is None else seq_len)
        if seq_len > limit:
            raise BadInput(f"seq_len {seq_len} is longer than {spec.name}'s {limit} positions", field="seq_len",
                           value=seq_len)
        check_addressable(f"a batch of {batch_size} x {seq_len} tokens", (batch_size, seq_len + 1))
    else:
        seq_len = None
        if data is not None:
            raise BadInput(f"data is for text models; '{spec.name}' is a ViT and trains on synthetic images",
                           field="data", value=data)
    dev = resolve_device(device, auto="cpu")
    return _Setup(spec, prec, optimizer, step_list, batch_size, seq_len, seed, lr, data, dev)


def _check_fits(setup: _Setup, n_params: int) -> None:
    """EnvironmentUnavailable when params + grads + optimizer state clearly cannot fit on the device."""
    from sgdsai_cli.measure.devices import free_bytes
    from sgdsai_cli.optim.registry import state_buffers

    need = n_params * setup.precision.bytes_per_param * (2 + state_buffers(setup.optimizer))
    free = free_bytes(setup.device)
    if free is not None and need > free:
        raise EnvironmentUnavailable(
            f"model '{setup.spec.name}' needs at least {need / 2**30:.1f} GiB for parameters, gradients and "
            f"{setup.optimizer} state; {setup.device} has {free / 2**30:.1f} GiB free", field="device",
            value=str(setup.device))


@dataclass
class _Trained:
    by_step: dict[int, list[dict[str, Any]]]
    losses: dict[str, float | None]
    diverged: int | None
    state_check: dict[str, Any] | None
    seconds: float
    impl: str
    lr: float | None


def _first_step(opt, setup: _Setup, k: int) -> None:
    """opt.step(); an optimizer that cannot train this model at all (LBFGS, SparseAdam) is bad input."""
    try:
        opt.step()
    except (TypeError, RuntimeError) as e:  # LBFGS needs a closure, SparseAdam sparse gradients, ...
        if k > 1 or isinstance(e, torch.OutOfMemoryError) or "memory" in str(e).lower():
            raise
        raise BadInput(f"optimizer {setup.optimizer} cannot train '{setup.spec.name}' here ({error_text(e)})",
                       field="optimizer", value=setup.optimizer) from None


def _train(setup: _Setup, net, params, corpus, report) -> _Trained:
    """Step 0's g-SNR, then train to the last listed step, measuring at each listed one."""
    from sgdsai_cli.models import training_loss

    opt, impl = build_optimizer(setup.optimizer, params)
    if setup.lr is not None:
        for group in opt.param_groups:
            group["lr"] = float(setup.lr)
    batches = _batches(setup.spec, corpus, setup.batch_size, setup.seq_len, setup.device, setup.seed)
    prec = setup.precision
    autocast = (torch.autocast(device_type=setup.device.type, dtype=prec.autocast_dtype)
                if prec.autocast_dtype is not None else contextlib.nullcontext())

    def forward_backward() -> float | None:
        with autocast:
            loss = training_loss(setup.spec, net, next(batches))
        loss.backward()
        return _finite(float(loss.detach()))

    started, last = time.perf_counter(), setup.steps[-1]
    losses = {"0": forward_backward()}
    by_step = {0: measure_gsnr(params)}
    diverged = None if losses["0"] is not None else 0
    state_check = None
    for k in range(1, last + 1 if diverged is None else 1):
        _first_step(opt, setup, k)
        if k == 1 and isinstance(opt, SGDSaI):
            state_check = _compare_state(opt, params, by_step[0])
        opt.zero_grad(set_to_none=True)
        value = forward_backward()
        if k in setup.steps:
            by_step[k], losses[str(k)] = measure_gsnr(params), value
        report(Progress(setup.spec.name, k, last, "training"))
        if value is None:
            diverged = k
            break
    for k in setup.steps:  # steps never reached after a divergence
        if k not in by_step:
            by_step[k], losses[str(k)] = [{"gsnr": None, "grad_norm": None, "degenerate": None} for _ in params], None
    return _Trained(by_step, losses, diverged, state_check, time.perf_counter() - started, impl,
                    opt.param_groups[0].get("lr"))


def _tensor_records(named, family: str, by_step) -> list[dict[str, Any]]:
    from sgdsai_cli.models import block_type

    tensors = []
    for i, (name, p) in enumerate(named):
        kind, layer = block_type(name, family)
        init = by_step[0][i]
        n = p.numel()
        ratio = init["gsnr"] / math.sqrt(n - 1) if init["gsnr"] is not None and n > 1 else None
        tensors.append({
            "name": name, "block_type": kind, "layer": layer, "numel": n, "shape": list(p.shape),
            "gsnr_init": init["gsnr"], "gsnr_over_sqrt_n_minus_1": ratio,
            "grad_norm_init": init["grad_norm"], "degenerate": init["degenerate"],
            "gsnr_by_step": {str(k): v[i]["gsnr"] for k, v in by_step.items()},
        })
    return tensors


def _run(setup: _Setup, corpus, report) -> tuple[list, _Trained]:
    """Build the model on the device and train it; out of memory is the environment's (exit 3)."""
    from sgdsai_cli.models import build_model

    torch.manual_seed(setup.seed)
    where = f"out of memory on {setup.device} training '{setup.spec.name}' (batch {setup.batch_size})"
    try:
        net = build_model(setup.spec, setup.device, setup.precision.param_dtype)
        named = list(net.named_parameters())  # a tied head is the same tensor: listed once
        return named, _train(setup, net, [p for _, p in named], corpus, report)
    except torch.OutOfMemoryError:
        raise EnvironmentUnavailable(f"{where}; try a smaller batch_size or seq_len", field="device") from None
    except RuntimeError as e:
        if "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            raise EnvironmentUnavailable(f"{where}; try a smaller batch_size or seq_len", field="device") from None
        raise


def gsnr(model: str, *, device: str = "auto", precision: str = "fp32", steps: str | Sequence[int] = DEFAULT_STEPS,
         optimizer: str = "sgdsai", data: str | os.PathLike | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
         seq_len: int | None = None, seed: int = 0, lr: float | None = DEFAULT_LR,
         on_progress: ProgressCallback | None = None) -> GsnrResult:
    """Run the g-SNR analysis; the typed result (``to_dict()`` is the ``kind: "gsnr"`` document).

    ``device`` auto is the first CUDA device, else the CPU (g-SNR needs real gradients: no meta).
    ``seq_len`` None means ``min(128, the model's positions)`` for text models; ViT ignores it.
    ``lr`` sets the learning rate of every parameter group (None: the optimizer's own default).
    Training stops at the first non-finite loss (``training.diverged_at_step``); later steps have no values.
    """
    from sgdsai_cli.measure.devices import device_record
    from sgdsai_cli.models import build_model
    from sgdsai_cli.models.corpus import load_corpus

    setup = _check(model, device, precision, steps, optimizer, data, batch_size, seq_len, seed, lr)
    spec = setup.spec
    corpus = load_corpus(data, text_only=True) if spec.family != "vit" else None
    n_params = sum(p.numel() for p in build_model(spec, "meta", setup.precision.param_dtype).parameters())
    _check_fits(setup, n_params)
    named, trained = _run(setup, corpus, report_to(on_progress))
    tensors = _tensor_records(named, spec.family, trained.by_step)
    data_record = corpus.describe() if corpus is not None else {
        "kind": "synthetic-images", "source": f"seeded N(0,1) images {spec.config.image_size}x"
        f"{spec.config.image_size}, random labels (seed {seed})", "files": None, "bytes": None, "tokens": None}
    spec_record = {"model": spec.name, "precision": setup.precision.name, "device": str(setup.device),
                   "optimizer": optimizer, "batch_size": batch_size, "seq_len": setup.seq_len, "steps": setup.steps,
                   "seed": seed, "data": None if data is None else str(data)}
    body = {
        "model": {"name": spec.name, "family": spec.family, "params": n_params, "param_tensors": len(named)},
        "data": data_record,
        "training": {"optimizer": optimizer, "impl": trained.impl, "lr": trained.lr,
                     "steps_run": setup.steps[-1] if trained.diverged is None else trained.diverged,
                     "seconds": trained.seconds, "loss_by_step": trained.losses,
                     "diverged_at_step": trained.diverged},
        "tensors": tensors,
        "summary": summarise(tensors),
        "degenerate": degenerate_list(tensors),
        "stability": stability(tensors, setup.steps),
        "checks": {"sgdsai_state_equal": trained.state_check},
    }
    return GsnrResult(spec=spec_record, body=body, environment=Environment.current(device_record(setup.device)))
