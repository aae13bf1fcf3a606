"""g-SNR results as tables: the per-block-type table for the terminal, pandas frames and CSV for reports."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from sgdsai_cli.render import format as fmt
from sgdsai_cli.render.tables import new_table


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


def _header_lines(doc: dict) -> list[str]:
    spec, model, data, training = doc["spec"], doc["model"], doc["data"], doc["training"]
    device = doc["environment"]["device"]
    lines = [f"g-SNR of {model['name']} ({fmt.count(model['params'])} parameters in {model['param_tensors']} "
             f"tensors), {spec['precision']}, {spec['device']} ({device.get('name')}), {training['optimizer']} "
             f"({training['impl']}, lr {training['lr']}), {training['steps_run']} steps in "
             f"{training['seconds']:.1f} s"]
    if data["kind"] == "text":
        lines.append(f"data: {fmt.count(data['bytes'])} bytes of real text from {data['source']} "
                     f"({data['files']} files), byte tokens, batch {spec['batch_size']} x {spec['seq_len']}")
    else:
        lines.append(f"data: synthetic images ({data['source']}), batch {spec['batch_size']}")
    return lines


def summary_table(doc: dict) -> Table:
    """One row per block type: tensors, elements, degenerate, g-SNR min/median/max, /sqrt(n-1), change."""
    steps = doc["spec"]["steps"]
    table = new_table(f"g-SNR at step 0 by block type; change: largest of any tensor, step {steps[0]} -> "
                      f"{steps[-1]}",
                      [(c, "left" if c == "block type" else "right") for c in
                       ("block type", "tensors", "elements", "degen.", "min", "median", "max",
                        "/sqrt(n-1) med", "/sqrt(n-1) max", "max change")])
    for row in doc["summary"]:
        table.add_row(row["block_type"], str(row["tensors"]), fmt.count(row["elements"]), str(row["degenerate"]),
                      fmt.number(row["gsnr_min"]), fmt.number(row["gsnr_median"]), fmt.number(row["gsnr_max"]),
                      fmt.fixed(row["ratio_median"], 5), fmt.fixed(row["ratio_max"], 5),
                      fmt.pct(row["max_rel_change"]))
    return table


def _degenerate(doc: dict) -> Table | str:
    if not doc["degenerate"]:
        return "degenerate tensors: none (every tensor has >1 element and a non-constant gradient)"
    table = new_table("degenerate tensors (step 0)", [(c, "left") for c in
                                                      ("tensor", "elements", "reason", "what SGDSaI does")])
    for d in doc["degenerate"]:
        table.add_row(d["name"], fmt.count(d["numel"]), d["reason"], d["sgdsai_action"])
    return table


def _footer_lines(doc: dict) -> list[str]:
    st, training = doc["stability"], doc["training"]
    lines = []
    if st["max_rel_change"] is not None:
        lines.append(f"stability: from step {st['first_step']} to {st['last_step']} the g-SNR of "
                     f"{st['tensors_compared']} tensors changed by a median {fmt.pct(st['median_rel_change'])}, "
                     f"at most {fmt.pct(st['max_rel_change'])} ({st['max_rel_change_tensor']})")
    lines.append("loss: " + ", ".join(f"step {k} {fmt.number(v)}" for k, v in training["loss_by_step"].items()))
    if training.get("diverged_at_step") is not None:
        lines.append(f"warning: training diverged (non-finite loss) at step {training['diverged_at_step']}; "
                     "later steps have no values: try a smaller learning rate")
    check = doc["checks"].get("sgdsai_state_equal")
    if check:
        verdict = "equal" if check["equal"] else f"NOT equal for {check['mismatched']}"
        lines.append(f"check: SGDSaI's stored g-SNR after its first step is {verdict} to these step-0 values "
                     f"({check['compared']} tensors)")
    return lines


def gsnr_renderables(doc: dict, *, quiet: bool = False) -> list[Any]:
    """What the terminal shows, in order: header lines, the table, degenerate tensors, stability, loss, checks."""
    if quiet:
        return [summary_table(doc)]
    return [Text(line) for line in _header_lines(doc)] + [summary_table(doc), _as_text(_degenerate(doc))] + \
        [Text(line) for line in _footer_lines(doc)]


def _as_text(item):
    return Text(item) if isinstance(item, str) else item
