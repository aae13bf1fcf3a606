"""bitsandbytes' 8-bit AdamW (``bitsandbytes.optim.AdamW8bit``), built so that it also runs on fake tensors.

bitsandbytes (optional extra ``sgdsai[bnb]``) keeps AdamW's two moments in 8 bits, block-wise
quantised: per parameter ``state1``/``state2`` (uint8, one byte per element), ``absmax1``/``absmax2``
(fp32, one per block of 256 elements) and the two 256-entry fp32 code books ``qmap1``/``qmap2``,
one pair shared by every parameter (counted once, as storages are). A parameter of fewer than
``min_8bit_size`` (4096) elements keeps 32-bit state: ``state1``/``state2`` in fp32. The step
count is a Python int (no bytes). All of this is bitsandbytes' own ``init_state``, run by its
first ``step()``: on meta tensors (its ops have meta kernels), fake tensors and real CPU or CUDA
tensors alike.

One thing cannot run under ``FakeTensorMode``: the constructor builds the code books from Python
lists (``create_dynamic_map`` reads tensor values). Under a fake mode the optimizer is therefore
constructed outside it and its code books are then converted into that mode's fake tensors, the
same 256 fp32 values, so that ``init_state`` hands them to each parameter as it does on a device.
"""

from __future__ import annotations

from sgdsai_cli.errors import EnvironmentUnavailable

INSTALL = "pip install 'sgdsai[bnb]'"
MIN_8BIT_SIZE = 4096  # bitsandbytes' default: smaller tensors keep 32-bit state (checked against bnb in tests)


def bitsandbytes_module():
    """The imported ``bitsandbytes``; EnvironmentUnavailable naming the extra when it is missing."""
    from sgdsai_cli.extras import import_bitsandbytes

    try:
        return import_bitsandbytes("optimizer 'adamw8bit'")
    except EnvironmentUnavailable as e:
        raise EnvironmentUnavailable(str(e), value="adamw8bit") from None


def build_adamw8bit(params, lr: float):
    """``bitsandbytes.optim.AdamW8bit(params, lr=lr)`` with its defaults (``min_8bit_size`` 4096)."""
    from torch._guards import active_fake_mode
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    bnb = bitsandbytes_module()
    mode = active_fake_mode()
    if mode is None:
        return bnb.optim.AdamW8bit(params, lr=lr)
    with unset_fake_temporarily():
        opt = bnb.optim.AdamW8bit(params, lr=lr)
    opt.name2qmap = {key: mode.from_tensor(qmap) for key, qmap in opt.name2qmap.items()}
    return opt


def is_bitsandbytes(optimizer) -> bool:
    """Whether ``optimizer`` is one of bitsandbytes' optimizers."""
    return type(optimizer).__module__.split(".")[0] == "bitsandbytes"


def state_note(optimizer) -> str:
    """What a row of ``optimizer`` (stepped once) should say: how many tensors kept 8-bit and 32-bit state."""
    import torch

    small = sum(1 for s in optimizer.state.values() if s.get("state1") is not None
                and s["state1"].dtype == torch.float32)
    total = sum(1 for s in optimizer.state.values() if s.get("state1") is not None)
    return (f"bitsandbytes AdamW8bit, state from its own init_state: {total - small} tensors 8-bit, {small} under "
            f"{MIN_8BIT_SIZE} elements 32-bit; its update is one in-place bitsandbytes op per tensor (no step "
            "temporary is traced)")
