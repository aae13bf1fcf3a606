"""The optimizer registry: its one table of what each optimizer keeps and moves, and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdsai_cli.errors import BadInput
from sgdsai_cli.optim.registry import build_optimizer, state_buffers, tensors_moved


@pytest.mark.parametrize(
    "name, buffers, moved",
    [
        ("sgdsai", 1, 5), ("sgdsai:fused", 1, 5), ("sgdsai-ref", 1, 5), ("sgd", 1, 5),
        ("adamw", 2, 7), ("adamw-fused", 2, 7), ("adamw-foreach", 2, 7), ("adamw-loop", 2, 7),
        ("adafactor", 0, None),  # factored row/column statistics: no full-size buffer for a matrix
        ("torch:RMSprop", 2, None),  # any other torch class: the conservative two buffers
    ],
)
def test_registry_footprint_table(name, buffers, moved):
    assert state_buffers(name) == buffers
    assert tensors_moved(name) == moved


def test_registry_state_buffers_agree_with_real_state():
    params = [nn.Parameter(torch.randn(8, 8))]
    params[0].grad = torch.randn(8, 8)
    for name in ("sgdsai", "adamw", "sgd"):
        opt, _ = build_optimizer(name, params)
        opt.step()
        full = sum(t.nbytes for s in opt.state.values() for t in s.values()
                   if isinstance(t, torch.Tensor) and t.shape == params[0].shape)
        assert full == state_buffers(name) * params[0].nbytes, name


@pytest.mark.parametrize("name", ["adamx", "torch:Adamx"])
def test_registry_errors_carry_the_value_and_field_not_a_flag(name):
    with pytest.raises(BadInput) as err:
        state_buffers(name)
    assert f"'{name}'" in str(err.value) and "--" not in str(err.value)
    assert err.value.value == name
