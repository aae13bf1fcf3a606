"""g-SNR analysis: the per-tensor learning-rate scales SGD-SaI gives a model, and whether they stay put.

At step 0 the model takes one batch, and the g-SNR of every parameter tensor's
gradient is computed by the very function ``SGDSaI`` uses
(``sgdsai_cli.optim.gsnr_stats``). The model then trains with the chosen optimizer
on fresh batches and the g-SNR of that step's gradient is recomputed at each listed
step (same function), which tests the paper's claim that the values hardly move.

    doc = analyse("tiny-gpt2", device="cpu", steps=[0, 10, 50])   # a "gsnr" result document
    frames = summary_frames(doc)                                   # pandas views for reports

Text models train on bytes of real text (``corpus.load_corpus``); ViT presets on
seeded synthetic images (the document's ``data.kind`` says which).

Identity used for checks (DESIGN.md section 1): with the biased variance,
``gsnr = sqrt(n-1) * sqrt(1 + mean^2/var)`` (eps aside), so ``gsnr / sqrt(n-1) >= 1``
for every tensor with more than one element and a non-constant gradient.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sgdsai_cli.errors import BadInput, EnvironmentUnavailable
from sgdsai_cli.measure import devices
from sgdsai_cli.measure.devices import device_record, meminfo_bytes
from sgdsai_cli.optim import SGDSaI, gsnr_stats
from sgdsai_cli.optim.registry import build_optimizer, resolve_optimizer
from sgdsai_cli.precision import resolve_precision

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

# Degenerate first gradients and what SGDSaI does with them.
DEGENERATE_ACTIONS = {
    "single_element": "g-SNR set to 1: a plain SGD-momentum step",
    "constant": "g-SNR set to 1: a plain SGD-momentum step",
    "zero": "no g-SNR yet: weight decay only, until the first non-zero gradient sets g-SNR",
    "no_gradient": "no gradient: the optimizer skips the tensor",
}


# ----------------------------------------------------------------------------------------------
# inputs


def parse_steps(text: str | Sequence[int]) -> list[int]:
    """'0,10,50' -> [0, 10, 50]: non-negative integers, strictly increasing; 0 is always added.

    Step k is the gradient after k optimizer steps; step 0 (the gradient SGDSaI takes
    its g-SNR from) is always measured, listed or not.
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise BadInput(f"bad --steps '{text}' (use a comma-separated list such as 0,10,50)")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise BadInput(f"bad --steps '{text}' (steps are whole numbers, such as 0,10,50)") from None
    else:
        values = [int(v) for v in text]
        text = ",".join(str(v) for v in values)
    if not values:
        raise BadInput("bad --steps: the list is empty")
    if any(v < 0 for v in values):
        raise BadInput(f"bad --steps '{text}' (steps must be 0 or more)")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise BadInput(f"bad --steps '{text}' (list each step once, in increasing order)")
    if values[-1] > MAX_STEP:
        raise BadInput(f"bad --steps '{text}' (at most {MAX_STEP} steps)")
    return values if values[0] == 0 else [0, *values]





def resolve_device(text: str) -> torch.device:
    """'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'. g-SNR needs values, so no meta."""
    return devices.resolve_device(text, meta_refusal="compute g-SNR (it needs real gradient values)")


def _check_fits(n_params: int, bytes_per_param: int, optimizer: str, dev: torch.device, model: str) -> None:
    """EnvironmentUnavailable when params + grads + optimizer state clearly cannot fit on the device."""
    state = 1 if optimizer.startswith("sgd") else 2  # momentum only vs two moments (an upper bound)
    need = n_params * bytes_per_param * (2 + state)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
    else:
        free = meminfo_bytes("MemAvailable")
    if free is not None and need > free:
        raise EnvironmentUnavailable(
            f"model '{model}' needs at least {need / 2**30:.1f} GiB for parameters, gradients and "
            f"{optimizer} state; {dev} has {free / 2**30:.1f} GiB free")


# ----------------------------------------------------------------------------------------------
# the run


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


def analyse(
    model: str,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    steps: str | Sequence[int] = DEFAULT_STEPS,
    optimizer: str = "sgdsai",
    data: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seq_len: int | None = None,
    seed: int = 0,
    lr: float | None = DEFAULT_LR,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run the g-SNR analysis and return the ``kind: "gsnr"`` result document.

    ``seq_len`` None means ``min(128, the model's positions)`` for text models; ViT ignores it.
    ``lr`` sets the learning rate of every parameter group (None: the optimizer's own default).
    Training stops at the first non-finite loss (``training.diverged_at_step``); the steps
    after it have no values.
    ``progress(step, last_step)`` is called after each training step (the CLI shows it).
    Raises BadInput for bad arguments and EnvironmentUnavailable when the device cannot do it.
    """
    from sgdsai_cli.models import _addressable, block_type, build_model, resolve_model, training_loss
    from sgdsai_cli.results import envelope

    spec = resolve_model(model)
    prec = resolve_precision(precision)
    resolve_optimizer(optimizer)
    step_list = parse_steps(steps)
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                           or lr <= 0):
        raise BadInput(f"bad --lr {lr!r} (must be a positive number)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise BadInput(f"bad --batch-size {batch_size!r} (must be a positive integer)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise BadInput(f"bad --seed {seed!r} (must be an integer from -2**63 to 2**64-1)")
    text_model = spec.family != "vit"
    if text_model:
        limit = spec.config.n_positions if spec.family == "gpt2" else spec.config.max_position_embeddings
        seq_len = min(DEFAULT_SEQ_LEN, limit) if seq_len is None else seq_len
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
            raise BadInput(f"bad --seq-len {seq_len!r} (must be a positive integer)")
        if seq_len > limit:
            raise BadInput(f"--seq-len {seq_len} is longer than {spec.name}'s {limit} positions")
        _addressable(f"a batch of {batch_size} x {seq_len} tokens", (batch_size, seq_len + 1))
    else:
        seq_len = None
        if data is not None:
            raise BadInput(f"--data is for text models; '{spec.name}' is a ViT and trains on synthetic images")
    dev = resolve_device(device)

    from sgdsai_cli.models.corpus import load_corpus

    corpus = load_corpus(data) if text_model else None
    meta_model = build_model(spec, "meta", prec.param_dtype)
    n_params = sum(p.numel() for p in meta_model.parameters())
    del meta_model
    _check_fits(n_params, prec.bytes_per_param, optimizer, dev, spec.name)

    torch.manual_seed(seed)
    try:
        net = build_model(spec, dev, prec.param_dtype)
        named = list(net.named_parameters())  # a tied head is the same tensor: listed once
        params = [p for _, p in named]
        opt, impl = build_optimizer(optimizer, params)
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = float(lr)
        batches = _batches(spec, corpus, batch_size, seq_len, dev, seed)
        autocast = (torch.autocast(device_type=dev.type, dtype=prec.autocast_dtype)
                    if prec.autocast_dtype is not None else contextlib.nullcontext())

        def forward_backward() -> float:
            batch = next(batches)
            with autocast:
                loss = training_loss(spec, net, batch)
            loss.backward()
            return loss.detach()

        started = time.perf_counter()
        last = step_list[-1]
        losses: dict[str, float | None] = {}
        by_step: dict[int, list[dict[str, Any]]] = {}
        loss = forward_backward()
        by_step[0] = measure_gsnr(params)
        losses["0"] = _finite(float(loss))
        diverged = None if losses["0"] is not None else 0
        state_check = None
        for k in range(1, last + 1 if diverged is None else 1):
            try:
                opt.step()
            except (TypeError, RuntimeError) as e:  # LBFGS needs a closure, SparseAdam sparse gradients, ...
                if k > 1 or isinstance(e, torch.OutOfMemoryError) or "memory" in str(e).lower():
                    raise
                raise BadInput(f"--optimizer {optimizer} cannot train '{spec.name}' here "
                               f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
                               ) from None
            if k == 1 and isinstance(opt, SGDSaI):
                state_check = _compare_state(opt, params, by_step[0])
            opt.zero_grad(set_to_none=True)
            value = _finite(float(forward_backward()))
            if k in step_list:
                by_step[k] = measure_gsnr(params)
                losses[str(k)] = value
            if progress is not None:
                progress(k, last)
            if value is None:
                diverged = k
                break
        for k in step_list:  # steps never reached after a divergence
            if k not in by_step:
                by_step[k] = [{"gsnr": None, "grad_norm": None, "degenerate": None} for _ in params]
                losses[str(k)] = None
        seconds = time.perf_counter() - started
    except torch.OutOfMemoryError:
        raise EnvironmentUnavailable(f"out of memory on {dev} training '{spec.name}' "
                                     f"(batch {batch_size}); try a smaller --batch-size or --seq-len") from None
    except RuntimeError as e:
        if "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            raise EnvironmentUnavailable(f"out of memory on {dev} training '{spec.name}': try a smaller "
                                         "--batch-size or --seq-len") from None
        raise

    tensors = []
    for i, (name, p) in enumerate(named):
        kind, layer = block_type(name, spec.family)
        init = by_step[0][i]
        n = p.numel()
        ratio = init["gsnr"] / math.sqrt(n - 1) if init["gsnr"] is not None and n > 1 else None
        tensors.append({
            "name": name, "block_type": kind, "layer": layer, "numel": n, "shape": list(p.shape),
            "gsnr_init": init["gsnr"], "gsnr_over_sqrt_n_minus_1": ratio,
            "grad_norm_init": init["grad_norm"], "degenerate": init["degenerate"],
            "gsnr_by_step": {str(k): v[i]["gsnr"] for k, v in by_step.items()},
        })

    data_record = corpus.describe() if corpus is not None else {
        "kind": "synthetic-images", "source": f"seeded N(0,1) images {spec.config.image_size}x"
        f"{spec.config.image_size}, random labels (seed {seed})", "files": None, "bytes": None, "tokens": None}
    spec_record = {"model": spec.name, "precision": prec.name, "device": str(dev), "optimizer": optimizer,
                   "batch_size": batch_size, "seq_len": seq_len, "steps": step_list, "seed": seed,
                   "data": None if data is None else str(data)}
    body = {
        "model": {"name": spec.name, "family": spec.family, "params": n_params, "param_tensors": len(named)},
        "data": data_record,
        "training": {"optimizer": optimizer, "impl": impl, "lr": opt.param_groups[0].get("lr"),
                     "steps_run": last if diverged is None else diverged, "seconds": seconds,
                     "loss_by_step": losses, "diverged_at_step": diverged},
        "tensors": tensors,
        "summary": summarise(tensors),
        "degenerate": degenerate_list(tensors),
        "stability": stability(tensors, step_list),
        "checks": {"sgdsai_state_equal": state_check},
    }
    return envelope("gsnr", spec_record, body, device_record(dev))


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


# ----------------------------------------------------------------------------------------------
# summaries (pure functions of the tensor records)


def rel_change(first: float | None, last: float | None) -> float | None:
    """|last - first| / first, or None when either is unknown or first is 0."""
    if first is None or last is None or first == 0:
        return None
    return abs(last - first) / first


def _block_order(kind: str) -> tuple[int, str]:
    from sgdsai_cli.models import BLOCK_TYPES

    return (BLOCK_TYPES.index(kind) if kind in BLOCK_TYPES else len(BLOCK_TYPES), kind)


def summarise(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per block type: counts, g-SNR min/median/max, g-SNR/sqrt(n-1) and the stability figure.

    g-SNR statistics cover the non-degenerate tensors; ``degenerate`` counts the others.
    ``max_rel_change`` is the largest |g_last - g_first| / g_first of any tensor of the type
    between the first and last measured step (None with a single step).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in tensors:
        groups.setdefault(t["block_type"], []).append(t)
    rows = []
    for kind in sorted(groups, key=_block_order):
        ts = groups[kind]
        good = [t for t in ts if t["degenerate"] is None and t["gsnr_init"] is not None]
        values = [t["gsnr_init"] for t in good]
        ratios = [t["gsnr_over_sqrt_n_minus_1"] for t in good]
        changes = []
        for t in ts:
            keys = list(t["gsnr_by_step"])
            if len(keys) > 1 and t["degenerate"] is None:
                c = rel_change(t["gsnr_by_step"][keys[0]], t["gsnr_by_step"][keys[-1]])
                if c is not None:
                    changes.append((c, t["name"]))
        top = max(changes) if changes else None
        rows.append({
            "block_type": kind, "tensors": len(ts), "elements": sum(t["numel"] for t in ts),
            "degenerate": len(ts) - len(good),
            "gsnr_min": min(values) if values else None,
            "gsnr_median": statistics.median(values) if values else None,
            "gsnr_max": max(values) if values else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "max_rel_change": top[0] if top else None,
            "max_rel_change_tensor": top[1] if top else None,
        })
    return rows


def degenerate_list(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tensors whose first gradient is degenerate, with what SGDSaI does for each."""
    return [{"name": t["name"], "block_type": t["block_type"], "numel": t["numel"], "reason": t["degenerate"],
             "gsnr_init": t["gsnr_init"], "sgdsai_action": DEGENERATE_ACTIONS[t["degenerate"]]}
            for t in tensors if t["degenerate"] is not None]


def stability(tensors: list[dict[str, Any]], steps: list[int]) -> dict[str, Any]:
    """How far the g-SNR of non-degenerate tensors moved between the first and last measured step."""
    first, last = str(steps[0]), str(steps[-1])
    changes = []
    for t in tensors:
        if t["degenerate"] is None:
            c = rel_change(t["gsnr_by_step"].get(first), t["gsnr_by_step"].get(last))
            if c is not None:
                changes.append((c, t["name"]))
    if len(steps) < 2 or not changes:
        return {"first_step": steps[0], "last_step": steps[-1], "tensors_compared": len(changes),
                "max_rel_change": None, "max_rel_change_tensor": None, "median_rel_change": None}
    top = max(changes)
    return {"first_step": steps[0], "last_step": steps[-1], "tensors_compared": len(changes),
            "max_rel_change": top[0], "max_rel_change_tensor": top[1],
            "median_rel_change": statistics.median(c for c, _ in changes)}


def summary_frames(doc: dict) -> dict[str, Any]:
    """A g-SNR document as pandas DataFrames, for reports and the CSV.

    Keys: ``tensors`` (one row per tensor, ``gsnr@K`` columns per measured step),
    ``by_type`` (the per-block-type summary), ``by_step`` (long form: name, block_type,
    layer, numel, step, gsnr) and ``degenerate``.
    """
    import pandas as pd

    rows, long_rows = [], []
    for t in doc.get("tensors", []):
        row = {k: t.get(k) for k in ("name", "block_type", "layer", "numel")}
        row["shape"] = "x".join(str(s) for s in t.get("shape", [])) or "scalar"
        for k in ("gsnr_init", "gsnr_over_sqrt_n_minus_1", "grad_norm_init", "degenerate"):
            row[k] = t.get(k)
        for step, value in t.get("gsnr_by_step", {}).items():
            row[f"gsnr@{step}"] = value
            long_rows.append({"name": t["name"], "block_type": t["block_type"], "layer": t.get("layer"),
                              "numel": t["numel"], "step": int(step), "gsnr": value})
        rows.append(row)
    tensors = pd.DataFrame(rows)
    if "layer" in tensors:
        tensors["layer"] = tensors["layer"].astype("Int64")
    by_step = pd.DataFrame(long_rows, columns=["name", "block_type", "layer", "numel", "step", "gsnr"])
    return {
        "tensors": tensors,
        "by_type": pd.DataFrame(doc.get("summary", [])),
        "by_step": by_step,
        "degenerate": pd.DataFrame(doc.get("degenerate", []),
                                   columns=["name", "block_type", "numel", "reason", "gsnr_init", "sgdsai_action"]),
    }


def tensors_csv(doc: dict) -> str:
    """The per-tensor values as CSV text (the ``tensors`` frame of summary_frames)."""
    return summary_frames(doc)["tensors"].to_csv(index=False)
