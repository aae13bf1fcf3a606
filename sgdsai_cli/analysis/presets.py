"""The preset catalogue as rows: name, family, parameters and parameter bytes per precision."""

from __future__ import annotations

from typing import Any


def preset_rows() -> list[dict[str, Any]]:
    """One dict per preset: name, family, params (a tied head counted once) and parameter bytes per
    precision (``bytes_fp32`` ... ``bytes_amp_fp16``; amp keeps fp32 parameters).

    ``params`` is the preset's documented count, which the model tests check against the built
    model exactly; a preset without one is built on meta (shapes only) and counted.
    """
    from sgdsai_cli.models import PRESETS, build_model, count_params
    from sgdsai_cli.precision import PRECISIONS

    rows = []
    for name, spec in PRESETS.items():
        n = spec.params if spec.params is not None else count_params(build_model(spec, device="meta"))
        row = {"name": name, "family": spec.family, "params": n}
        for pname, prec in PRECISIONS.items():
            row[f"bytes_{pname.replace('-', '_')}"] = n * prec.bytes_per_param
        rows.append(row)
    return rows
