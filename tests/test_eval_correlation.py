"""Rank correlations with intervals, the paired test, and the leaderboard CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval import correlate_annotations, correlate_tables, correlations, leaderboard, paired_comparison
from farm.eval.cli_leaderboard import main as leaderboard_main
from farm.io import write_annotations
from farm.types import Annotation, Pair


def test_correlations_by_hand_and_against_scipy():
    # ranks 1 2 3 4 vs 1 3 2 4: Σd² = 2 → ρ = 1 − 6·2/(4·15) = 0.8; τ = (5 − 1)/6
    out = correlations(np.array([10.0, 20, 30, 40]), np.array([1.0, 3, 2, 4]))
    assert float(out["spearman"]) == pytest.approx(0.8)
    assert float(out["kendall"]) == pytest.approx(4 / 6)
    from scipy.stats import kendalltau, pearsonr, spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 7)).round(1), rng.normal(size=(50, 7)).round(1)  # rounding makes ties
    got = correlations(a, b)
    for i in range(50):
        assert got["spearman"][i] == pytest.approx(spearmanr(a[i], b[i]).statistic)
        assert got["kendall"][i] == pytest.approx(kendalltau(a[i], b[i]).statistic)
        assert got["r2"][i] == pytest.approx(pearsonr(a[i], b[i]).statistic ** 2)


def test_parametric_interval_from_standard_errors():
    a = pd.DataFrame({"win_rate": [10.0, 20, 30, 40, 50], "standard_error": [0.0] * 5}, index=list("abcde"))
    b = pd.DataFrame({"win_rate": [12.0, 18, 35, 33, 60], "standard_error": [0.0] * 5}, index=list("abcde"))
    exact = correlate_tables(a, b, n_boot=100)
    assert exact.loc["spearman", "value"] == pytest.approx(0.9)
    assert exact.loc["spearman", "ci_low"] == exact.loc["spearman", "ci_high"] == pytest.approx(0.9)  # no noise
    b["standard_error"] = 5.0
    noisy = correlate_tables(a, b, n_boot=2000, seed=1)
    assert noisy.loc["spearman", "ci_low"] < 0.9 and noisy.loc["kendall", "ci_low"] < exact.loc["kendall", "value"]
    pd.testing.assert_frame_equal(noisy, correlate_tables(a, b, n_boot=2000, seed=1))
    with pytest.raises(FarmError, match="at least 3"):
        correlate_tables(a.iloc[:2], b)


def _anns(model: str, ps, judge: str):
    return [Annotation(Pair(f"q{i}", "base", "out", generator_2=model), float(p), judge) for i, p in enumerate(ps)]


def test_bootstrap_over_instructions_resamples_both_leaderboards_jointly():
    rng = np.random.default_rng(0)
    quality = {"m1": 0.2, "m2": 0.4, "m3": 0.6, "m4": 0.8}
    sim, hum = [], []
    for m, q in quality.items():
        sim += _anns(m, rng.random(200) < q, "sim")
        hum += _anns(m, rng.random(200) < q, "human")
    out = correlate_annotations(sim, hum, n_boot=500, seed=3)
    assert out.loc["spearman", "value"] == pytest.approx(1.0)
    assert out.loc["spearman", "ci_low"] <= 1.0 and out["n_models"].iloc[0] == 4
    # identical annotations on both sides: every resample gives the same two leaderboards → exactly 1
    same = correlate_annotations(sim, sim, n_boot=200)
    assert same.loc["spearman", "ci_low"] == pytest.approx(1.0)
    assert same.loc["kendall", "ci_low"] == pytest.approx(1.0)


def test_paired_test_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    base = rng.random(400)
    better = np.clip(base + 0.1, 0, 1)
    row = paired_comparison(better, base, n_boot=1000).iloc[0]
    assert row["p_value_t"] < 1e-6 and row["p_value_bootstrap"] <= 0.002 and row["ci_low"] > 0
    same = paired_comparison(base, base[rng.permutation(400)], n_boot=1000).iloc[0]
    assert same["p_value_t"] > 0.01 and same["ci_low"] < 0 < same["ci_high"]


def test_leaderboard_cli_writes_csv_and_pngs(tmp_path, capsys):
    rng = np.random.default_rng(2)
    files = []
    for m, q in {"m1": 0.3, "m2": 0.5, "m3": 0.7}.items():
        anns = [Annotation(Pair(f"q{i}", "b" * 40, "o" * int(rng.integers(10, 80)), generator_1="base",
                                generator_2=m), float(rng.random() < q), "judge") for i in range(60)]
        files.append(str(write_annotations(tmp_path / f"{m}.jsonl", anns)))
    csv, png, png2 = tmp_path / "lb.csv", tmp_path / "lb.png", tmp_path / "len.png"
    published = tmp_path / "published.csv"
    leaderboard(files, n_boot=0).to_csv(published)
    rc = leaderboard_main([*files, "--lc", "--out", str(csv), "--plot", str(png), "--length-plot", str(png2),
                           "--n-boot", "200", "--compare", str(published), "--paired", "m3", "m1",
                           "--compare-annotations", *files])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "p_value_t" in printed and "bootstrap interval over instructions" in printed
    saved = pd.read_csv(csv, index_col=0)
    expected = leaderboard(files, n_boot=200, lc=True, sort_by="length_controlled_winrate")
    pd.testing.assert_frame_equal(saved, expected, check_dtype=False, check_names=False)
    assert png.read_bytes()[:4] == b"\x89PNG" and png2.read_bytes()[:4] == b"\x89PNG"
