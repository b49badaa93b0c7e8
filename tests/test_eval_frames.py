"""Reading annotation files: rows named after files when asked or when generator names collide, same-named inputs
an error unless merged, string preferences only when numeric (and counted), invalid counts in the printed table;
and an interval that excludes its own estimate (the BCa fallback)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval import leaderboard
from farm.eval.frames import input_notes, to_frame


def _ae_file(path, model: str, prefs, base: str = "base"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"instruction": f"q{i}", "output_1": "b" * 5, "output_2": "m" * (i + 1),
                                 "generator_1": base, "generator_2": model, "annotator": "alpaca_eval_gpt4",
                                 "preference": p} for i, p in enumerate(prefs)]))
    return path


def test_colliding_generator_names_become_file_names(tmp_path):
    # two runs of one generator name (e.g. two checkpoints both called "model"): not merged silently
    a = _ae_file(tmp_path / "run_a.json", "model", [2, 2, 1])
    b = _ae_file(tmp_path / "run_b.json", "model", [1, 1, 1])
    lb = leaderboard([a, b], n_boot=0)
    assert sorted(lb.index) == ["run_a", "run_b"] and (lb["n_total"] == 3).all()
    merged = leaderboard([a, b], n_boot=0, merge=True)
    assert list(merged.index) == ["model"] and merged.loc["model", "n_total"] == 6


def test_name_from_file_and_same_named_inputs(tmp_path):
    x = _ae_file(tmp_path / "results/dpo/alpaca_eval_gpt4/annotations.json", "gen", [2, 1])
    y = _ae_file(tmp_path / "results/ppo/alpaca_eval_gpt4/annotations.json", "gen2", [2, 2])
    assert sorted(leaderboard([x, y], n_boot=0, name_from="file").index) == ["dpo", "ppo"]  # AlpacaEval's folders
    z = _ae_file(tmp_path / "other/dpo/alpaca_eval_gpt4/annotations.json", "gen3", [1, 1])
    with pytest.raises(FarmError, match="both named 'dpo'"):
        to_frame([x, y, z], name_from="file")
    assert to_frame([x, y, z], name_from="file", merge=True)["generator_2"].value_counts()["dpo"] == 4


def test_string_preferences_only_when_numeric_and_counted(tmp_path):
    f = _ae_file(tmp_path / "m.json", "m", ["2", "1.5", 2, None])
    frame = to_frame(f)
    assert frame["p_output_2"].tolist()[:3] == [1.0, 0.5, 1.0] and np.isnan(frame["p_output_2"].iloc[3])
    notes = input_notes(frame)
    assert any("2 of 4 preferences were numbers written as strings" in n for n in notes)
    assert any("m: 1 invalid" in n for n in notes)
    bad = _ae_file(tmp_path / "bad.json", "m", ["2", "second"])
    with pytest.raises(FarmError, match="bad.json:2"):
        to_frame(bad)


def test_invalid_counts_are_printed(tmp_path, capsys):
    from farm.eval.cli_leaderboard import main

    f = _ae_file(tmp_path / "m.json", "m", [2, None, 1, None])
    assert main([str(f), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert "n_invalid" in out and "m: 2 invalid" in out


def test_an_interval_never_excludes_its_estimate():
    from farm.eval.correlation import correlate_tables

    # identical rankings with small SEs: Spearman 1.0, which no resample can exceed (the percentile interval
    # would be [0.96, 1.0) and exclude 1.0)
    a = pd.DataFrame({"win_rate": [10.0, 20, 30, 40, 50, 60], "standard_error": 4.0}, index=list("abcdef"))
    b = a.assign(win_rate=a["win_rate"] * 0.9 + 3)
    corr = correlate_tables(a, b, n_boot=2000, seed=0)
    for stat in ("spearman", "kendall", "pearson"):
        row = corr.loc[stat]
        assert row["ci_low"] <= row["value"] <= row["ci_high"], stat
    assert corr.loc["spearman", "value"] == 1.0 and corr.loc["spearman", "ci_high"] == 1.0
    assert "BC" in corr.loc["spearman", "interval"] or "widened" in corr.loc["spearman", "interval"]
