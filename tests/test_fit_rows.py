"""profile's "fits" rows and plan answer alike: the same cards (gpus.FIT_GPUS is plan's DEFAULT_GPUS) and
the same rule (gpus.fits: the predicted reserved peak plus each card's CUDA context allowance)."""

from __future__ import annotations

from sgdsai_cli.analysis import gpus
from sgdsai_cli.analysis.plan import plan
from sgdsai_cli.render.profile import summary_rows


def test_fit_cards_are_plans_cards_h100_included():
    assert gpus.FIT_GPUS == gpus.DEFAULT_GPUS and "h100-80gb" in gpus.FIT_GPUS


def test_profile_fits_rows_agree_with_plan_on_every_card():
    from sgdsai_cli import profile

    optimizers = ("sgdsai", "adamw", "adamw-fused")
    result = profile(model="gpt2-xl", precision="fp32", device="meta", optimizers=optimizers, seq_len=512)
    planned = plan("gpt2-xl", precisions=["fp32"], optimizers=list(optimizers), batch_size=1, seq_len=512)
    verdicts = {(r.optimizer, r.gpu): r.fits for r in planned.rows}
    assert {gpu for _, gpu in verdicts} == set(gpus.FIT_GPUS)
    for row in summary_rows(result):
        for name in gpus.FIT_GPUS:
            assert row[f"fits[{name}]"] is verdicts[(row["optimizer"], name)], (row["optimizer"], name)
            card = gpus.GPUS[name]
            assert row[f"fits[{name}]"] is gpus.fits(card, row["predicted_reserved_peak_bytes"])
    # gpt2-xl fp32 sits at an edge: 24 GB cards say no, 40 GB and up say yes, for every optimizer
    assert not any(row["fits[rtx4090-24gb]"] for row in summary_rows(result))
    assert all(row["fits[a100-40gb]"] for row in summary_rows(result))
