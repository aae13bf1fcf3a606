"""report on a parallel job's profile: the figures rank by rank, side by side (render/report_ranks.py)."""

from __future__ import annotations

import json

import pytest

from sgdsai_cli.render.report_ranks import rank_notes, rank_tables


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[dict, object]:
    from sgdsai_cli import profile

    path = tmp_path_factory.mktemp("sim") / "ddp.json"
    result = profile(model="tiny-llama", parallel="ddp", world_size=4, device="meta", seq_len=32,
                     optimizers=["sgdsai", "adamw"])
    result.save(path)
    return json.loads(path.read_text()), path


def test_a_simulated_rank_gets_its_own_table(simulated):
    doc, _ = simulated
    tables = rank_tables(doc)
    assert [t.header for t in tables] == [["sgdsai (ddp)", "rank 0 of 4"], ["adamw (ddp)", "rank 0 of 4"]]
    rows = {r[0]: r[1] for r in tables[1].rows}
    assert rows["status"] == "ok" and rows["DDP buckets"] == rows["parameters"] == "617.25 KiB"
    assert "step peak (simulated)" in rows and "step peak (measured)" not in rows
    assert rank_notes(doc)[0].startswith("parallel job: ddp over 4 ranks, 25 MiB buckets")


def test_the_report_shows_the_rank_tables(simulated, tmp_path):
    from sgdsai_cli.render.report import build_report

    _, path = simulated
    paths = build_report([path], tmp_path / "rep")
    md = paths.markdown.read_text()
    assert "**Per rank: sgdsai, ddp, 1 of 4 ranks**" in md and "| adamw (ddp) | rank 0 of 4 |" in md
    assert "Per rank: adamw" in paths.html.read_text()


def test_two_ranks_side_by_side_with_their_spread(simulated):
    """Rows of two ranks (the simulated row and a copy as rank 1 with 1 KiB more state): a column each and the
    spread over them."""
    import copy

    doc = copy.deepcopy(simulated[0])
    runs = [r for r in doc["runs"] if r["optimizer"] == "sgdsai"]
    other = copy.deepcopy(runs[0])
    other["rank"] = 1
    other["memory"]["state_bytes"] += 1024
    doc["runs"] = [other, runs[0]]
    [table] = rank_tables(doc)
    assert table.header == ["sgdsai (ddp)", "rank 0", "rank 1", "spread"]
    rows = {r[0]: r[1:] for r in table.rows}
    assert rows["state"][2] == "1.00 KiB" and rows["parameters"][2] == "0 B" and rows["status"][2] == "-"


def test_documents_without_ranks_get_no_rank_table():
    from sgdsai_cli import profile

    doc = profile(model="tiny-llama", device="meta", seq_len=32).to_dict()
    assert rank_tables(doc) == [] and rank_notes(doc) == []


@pytest.mark.parametrize(("run", "label"), [({"optimizer": "sgdsai", "rank": 1}, "sgdsai r1"),
                                            ({"optimizer": "adamw"}, "adamw")])
def test_figures_label_ranks(run, label):
    from sgdsai_cli.render.profile_figures import run_label

    assert run_label(run) == label
