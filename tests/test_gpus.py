"""The GPU catalogue: every card has a context allowance that says where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgdsai_cli.analysis.gpus import GPUS, H100_CONTEXT_BYTES, resolve_gpu

RUN2 = Path(__file__).resolve().parents[1] / "reports" / "gpu-h100" / "run2"


@pytest.mark.parametrize("name", sorted(GPUS))
def test_every_card_states_its_context_source(name):
    g = GPUS[name]
    assert 0 < g.context_bytes < g.memory_bytes
    assert g.context_source.startswith(("measured: ", "assumption: "))


def test_h100_context_is_the_measured_figure():
    """NVML used minus reserved at the peak, the same in every real run of run2 on the H100."""
    gaps, totals = set(), set()
    for path in sorted(RUN2.glob("profile-*.json")):
        doc = json.loads(path.read_text())
        totals.add(doc["environment"]["device"]["total_memory_bytes"])
        for run in doc["runs"]:
            m = run["memory"]
            gaps.add(m["nvml_used_peak_bytes"] - m["peak_reserved_bytes"])
    assert gaps == {H100_CONTEXT_BYTES}
    h100 = resolve_gpu("h100-80gb")
    assert totals == {h100.memory_bytes} and h100.context_source.startswith("measured: ")


def test_custom_cards_get_the_default_assumption():
    assert resolve_gpu("custom:48GiB").context_source.startswith("assumption: ")
