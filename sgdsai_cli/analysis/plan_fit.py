"""``plan --fit``: per GPU and optimizer, which training recipes fit, and the largest batch each allows.

    rows = fit_rows(model_spec, gpus, ["sgdsai", "adamw"], seq_len=512)   # one dict per (recipe, optimizer, GPU)

The recipes form a ladder, from the most faithful to the leanest (``recipes``):

    full fp32                 every weight trained, fp32 params, grads and state
    full bf16                 every weight trained in bf16
    full bf16 + checkpointing torch.utils.checkpoint on every block (models.checkpointing)
    LoRA bf16                 peft adapters (fp32) on a frozen bf16 base (models.lora)
    LoRA bf16 + checkpointing
    QLoRA nf4                 the same adapters on a bitsandbytes 4-bit base (nf4, double quant; models.quantize),
    QLoRA nf4 + checkpointing computing in bf16 (left out without bitsandbytes, and the result says so)

Each rung is planned exactly as ``plan`` plans one precision (``plan.plan_rows``: the fake-tensor traces, the
allocator model, the card's context allowance, ``gpus.fits``), so a rung that fits here fits there. The LoRA
rungs use the adapter given (``--lora``), else rank 16, alpha 32 on peft's default targets for the model type;
a model peft has no default for (and no ``--lora``) gets no LoRA rungs, and the result says so.

A row's ``short_bytes`` is what the card lacks at batch 1 (``total_bytes - gpu_memory_bytes``), 0 when it fits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sgdsai_cli.progress import ProgressCallback

DEFAULT_LORA = "r=16,alpha=32"  # on peft's default targets for the model type


@dataclass(frozen=True)
class Recipe:
    name: str
    precision: str
    checkpointing: str = "none"
    lora: object = None  # models.lora.LoraSpec, or None: full training


def recipes(model_spec, lora=None) -> tuple[list[Recipe], str | None]:
    """The ladder for ``model_spec`` and a note when its LoRA rungs were left out (no default targets)."""
    from sgdsai_cli.errors import BadInput
    from sgdsai_cli.models import build_model
    from sgdsai_cli.models.lora import parse_lora

    ladder = [Recipe("full fp32", "fp32"), Recipe("full bf16", "bf16"),
              Recipe("full bf16 + checkpointing", "bf16", "full")]
    spec = parse_lora(lora if lora is not None else DEFAULT_LORA)
    try:
        build_model(dataclasses.replace(model_spec, lora=spec), device="meta")
    except BadInput as e:
        if lora is not None:
            raise
        return ladder, f"no LoRA rungs: {e} (give --lora)"
    spec = dataclasses.replace(spec, quant=None)
    label = f"LoRA r={spec.r} bf16"
    ladder += [Recipe(label, "bf16", "none", spec), Recipe(f"{label} + checkpointing", "bf16", "full", spec)]
    from sgdsai_cli.errors import EnvironmentUnavailable
    from sgdsai_cli.models.quantize import require_bitsandbytes

    try:
        require_bitsandbytes()
    except EnvironmentUnavailable as e:
        return ladder, f"no QLoRA rungs: {e}"
    q = dataclasses.replace(spec, quant="nf4", double_quant=True)
    label = f"QLoRA r={spec.r} nf4"
    ladder += [Recipe(label, "bf16", "none", q), Recipe(f"{label} + checkpointing", "bf16", "full", q)]
    return ladder, None


def fit_rows(model_spec, gpus, optimizers, *, batch_size: int = 1, seq_len: int = 512,
             context_bytes: int | None = None, lora=None,
             on_progress: ProgressCallback | None = None) -> tuple[list[dict], str | None]:
    """One dict per (recipe, optimizer, GPU), ladder order; and the note of ``recipes``."""
    from sgdsai_cli.analysis.plan import plan_rows

    ladder, note = recipes(model_spec, lora)
    rows = []
    for recipe in ladder:
        spec = dataclasses.replace(model_spec, checkpointing=recipe.checkpointing, lora=recipe.lora)
        trainable = _trainable_params(spec)
        for r in plan_rows(spec, [recipe.precision], gpus, optimizers, batch_size=batch_size, seq_len=seq_len,
                           context_bytes=context_bytes, on_progress=on_progress):
            rows.append({
                "recipe": recipe.name, "precision": recipe.precision,
                "activation_checkpointing": recipe.checkpointing,
                "lora": recipe.lora.text() if recipe.lora is not None else None,
                "trainable_params": trainable, "optimizer": r.optimizer, "impl": r.impl, "gpu": r.gpu,
                "gpu_memory_bytes": r.gpu_memory_bytes, "context_bytes": r.context_bytes,
                "model_state_bytes": r.model_state_bytes, "activation_bytes": r.activation_bytes,
                "total_bytes": r.total_bytes, "fits": r.fits, "max_batch_size": r.max_batch_size,
                "short_bytes": max(0, r.total_bytes - r.gpu_memory_bytes),
            })
    return rows, note


def add_fit_rows(spec: dict, body: dict, model_spec, gpus, rows, optimizers, fit, *, batch_size: int, seq_len: int,
                 context_bytes: int | None, lora, on_progress: ProgressCallback | None) -> None:
    """``plan``'s ``fit``: True (every GPU), False, or "auto" (the GPUs on which none of ``rows`` fits): puts
    ``fit_rows`` in ``body`` and says so in ``spec`` and ``body["assumptions"]``."""
    from sgdsai_cli.errors import BadInput

    if fit not in (True, False, "auto"):
        raise BadInput(f"bad fit {fit!r} (True, False or 'auto')", field="fit", value=fit)
    fit_gpus = gpus if fit is True else [
        g for g in gpus if fit == "auto" and not any(r.fits for r in rows if r.gpu == g.name)]
    if not fit_gpus:
        return
    spec["fit"] = True if fit is True else "auto"
    body["fit_rows"], note = fit_rows(model_spec, fit_gpus, optimizers, batch_size=batch_size, seq_len=seq_len,
                                      context_bytes=context_bytes, lora=lora, on_progress=on_progress)
    body["assumptions"]["fit_rows"] = (
        "each recipe planned as the rows are (reserved peak + the card's context); short_bytes = total_bytes - "
        "gpu_memory_bytes at batch_size, 0 where it fits" + (f"; {note}" if note else ""))


def _trainable_params(model_spec) -> int:
    from sgdsai_cli.models import build_model, trainable_parameters

    return sum(p.numel() for p in trainable_parameters(build_model(model_spec, device="meta")))


def first_fit(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (GPU, optimizer): the first rung (most faithful) that fits, else the rung short by the least."""
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["gpu"], r["optimizer"])
        have = best.get(key)
        if have is None or (not have["fits"] and (r["fits"] or r["short_bytes"] < have["short_bytes"])):
            best[key] = r
    return best
