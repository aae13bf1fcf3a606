"""One traced forward and backward with the markers the estimate's timeline is cut by.

    batch_bytes = marked_step(tracker, fake_mode, blocks, spec, precision, loss_model, model, batch_size, seq_len)

The tracker (``estimate._SegmentTracker`` or a subclass) is marked "pre" before the batch, "F<k>" as block k's
forward starts, "epi" after the last block, "exit" when autocast is left (its weight cache is freed), "loss",
"B<k>" when the gradient of block k's output is complete (its backward starts) and "post" when the first
block's input gradient is done. ``estimate`` (one device), ``parallel`` (FSDP2) and ``parallel_ddp`` (DDP)
trace with it, so their segments extend to the full depth the same way (``estimate._extend``).
"""

from __future__ import annotations

import contextlib

import torch

from sgdsai_cli.measure.storage import unique_bytes
from sgdsai_cli.precision import Precision


def autocast(precision: Precision):
    """Autocast for the amp precisions (fake tensors live on the CPU: CPU autocast casts as CUDA's does)."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=precision.autocast_dtype)


def first_tensor(args, kwargs):
    """A block's hidden states: the first tensor argument (transformers passes it by keyword too)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (tuple, list)) and a and isinstance(a[0], torch.Tensor):
            return a[0]
    return None


def marked_step(tracker, fake_mode, blocks, spec, precision: Precision, loss_model, model, batch_size: int,
                seq_len: int) -> int:
    """Forward and backward of ``loss_model`` (``model``, or a wrapper such as DDP around it) under ``fake_mode``
    and ``tracker``, marked as the module docstring says; returns the batch's bytes."""
    from sgdsai_cli import models

    n = len(blocks)
    handles = []

    def pre_hook(k):
        def hook(module, args, kwargs):
            tracker.mark(f"F{k}")
            x = first_tensor(args, kwargs)
            if k == 0 and x is not None and x.requires_grad:
                x.register_hook(lambda g: tracker.mark("post"))

        return hook

    def post_hook(k):
        def hook(module, args, kwargs, out):
            if k == n - 1:
                tracker.mark("epi")
            y = first_tensor((out,), {})  # its gradient complete: this block's backward starts
            if y is not None and y.requires_grad:
                y.register_hook(lambda g: tracker.mark(f"B{k}"))

        return hook

    for k, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(k), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook(k), with_kwargs=True))
    try:
        with fake_mode, tracker:
            tracker.mark("pre")
            batch = models.make_batch(spec, batch_size, seq_len, device="cpu", model=model)
            batch_bytes = unique_bytes(models.batch_tensors(batch))
            with autocast(precision):
                loss = models.training_loss(spec, loss_model, batch)
                tracker.mark("exit")  # leaving autocast frees its cache of low-precision weight copies
            tracker.mark("loss")
            loss.backward()
            del loss, batch
    finally:
        for h in handles:
            h.remove()
    return batch_bytes
