"""plan's formula GPU counts flagged impractical (analysis/plan_limits.py) and marked in the table."""

from __future__ import annotations

import pytest

from sgdsai_cli.analysis.plan_limits import REASON_COUNT, REASON_ROOM, impractical_counts

GiB = 2**30


# (P, G, A, usable, needed) -> flagged strategies and their reasons
@pytest.mark.parametrize(("p", "g", "a", "usable", "needed", "want"), [
    # llama-3-8b fp32 on an A100 40GB: P + A leave 0.89 of 38.67 GiB: ZeRO-2's 67 is an artefact
    (29.92, 29.92, 7.86, 38.67, {"zero1": None, "zero2": 67, "zero3": 3}, {"zero2": [REASON_ROOM]}),
    # plenty of room: nothing flagged
    (2.0, 2.0, 1.0, 38.0, {"zero1": 2, "zero2": 2, "zero3": 1}, {}),
    # room fine but a count past 1024
    (0.5, 0.5, 0.5, 38.0, {"zero1": 2000, "zero2": 1500, "zero3": 1025}, {
        "zero1": [REASON_COUNT], "zero2": [REASON_COUNT], "zero3": [REASON_COUNT]}),
    # activations alone fill over 90% of the card: even ZeRO-3
    (1.0, 1.0, 36.0, 38.0, {"zero1": None, "zero2": None, "zero3": 40}, {"zero3": [REASON_ROOM]}),
    # one GPU or none: never flagged
    (30.0, 30.0, 8.0, 38.67, {"zero1": None, "zero2": 1, "zero3": None}, {}),
])
def test_impractical_counts(p, g, a, usable, needed, want):
    got = impractical_counts(param_bytes=int(p * GiB), grad_bytes=int(g * GiB), activation_bytes=int(a * GiB),
                             usable_bytes=int(usable * GiB), needed={"ddp": None, **needed})
    assert {k: v["reason"].split("; ") for k, v in got.items()} == want
    for k, v in got.items():
        assert v["gpus"] == needed[k] and v["usable_bytes"] == int(usable * GiB)


def test_plan_flags_llama3_8b_fp32_on_40gb(cli):
    import json

    res = cli("plan", "--model", "tests/data/configs/llama-3-8b/config.json", "--precision", "fp32", "--gpu",
              "a100-40gb", "--optimizer", "sgdsai", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    [row] = doc["rows"]
    flagged = row["gpus_needed_impractical"]
    assert set(flagged) == {"zero2"} and flagged["zero2"]["gpus"] == row["gpus_needed"]["zero2"] > 1
    assert flagged["zero2"]["room_bytes"] < 0.1 * row["usable_bytes"]
    assert "formulas, not simulated" in doc["assumptions"]["gpus_needed"]
    table = cli("plan", "--model", "tests/data/configs/llama-3-8b/config.json", "--precision", "fp32", "--gpu",
                "a100-40gb", "--optimizer", "sgdsai")
    assert f"{row['gpus_needed']['zero2']}!" in table.stdout and "impractical" in table.stdout
