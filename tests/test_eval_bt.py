"""Bradley–Terry ratings: equal to a plain logistic regression (ties, soft labels, anchor), style control
recovers a judge's planted length preference, one-step vs exact bootstrap, and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval.bt import ELO_PER_LOGIT, bradley_terry


def _battles(n: int, n_models: int, seed: int, length_effect: float = 0.0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    strength = rng.normal(0, 1, n_models)
    a = rng.integers(0, n_models, n)
    b = (a + rng.integers(1, n_models, n)) % n_models
    la, lb = rng.integers(10, 400, n), rng.integers(10, 400, n)
    style = (lb - la) / (lb + la + 1)
    z = strength[b] - strength[a] + length_effect * (style - style.mean()) / style.std()
    u = rng.random(n)
    pb = 1 / (1 + np.exp(-z))
    p = np.where(u < pb - 0.05, 1.0, np.where(u < pb + 0.05, 0.5, 0.0))
    p[::7] = np.round(pb[::7], 2)  # some weighted (soft) verdicts too
    df = pd.DataFrame({"instruction": [f"q{i % (n // 5)}" for i in range(n)], "input": "",
                       "output_1": ["x" * int(k) for k in la], "output_2": ["y" * int(k) for k in lb],
                       "generator_1": [f"m{i}" for i in a], "generator_2": [f"m{i}" for i in b], "p_output_2": p})
    return df, strength


@pytest.mark.parametrize("anchor", [None, "m3"])
def test_ratings_equal_a_plain_logistic_regression(anchor):
    df, _ = _battles(3000, 9, seed=0)
    from bench.bench_bt import (
        plain_logistic_elo,  # scipy trust-exact on the rows, a dense design, nothing shared
    )

    res = bradley_terry(df, n_boot=0, anchor=anchor)
    ref = plain_logistic_elo(df, anchor)
    np.testing.assert_allclose(res.ratings.loc[ref.index, "rating"].to_numpy(), ref.to_numpy(), rtol=0, atol=1e-6)
    if anchor:
        assert res.ratings.loc[anchor, "rating"] == pytest.approx(1000, abs=1e-9)
    assert res.ratings["n_annotations"].sum() == 2 * len(df)


def test_ties_drop_and_half_differ_and_ratings_follow_strength():
    df, strength = _battles(4000, 6, seed=1)
    half = bradley_terry(df, n_boot=0).ratings["rating"]
    drop = bradley_terry(df, n_boot=0, ties="drop").ratings["rating"]
    order = [f"m{i}" for i in np.argsort(-strength)]
    assert np.corrcoef(half[[f"m{i}" for i in range(6)]], strength)[0, 1] > 0.99
    assert not np.allclose(half.sort_index(), drop.sort_index())
    # the Elo gaps track the planted logit gaps (BT on the Elo scale)
    gaps = (half[order[0]] - half[order[-1]]) / ELO_PER_LOGIT
    assert gaps == pytest.approx(strength.max() - strength.min(), rel=0.15)


def test_style_control_recovers_a_length_preference_and_removes_it_from_ratings():
    df, strength = _battles(6000, 6, seed=2, length_effect=0.8)
    res = bradley_terry(df, n_boot=0, style=True)
    assert res.style_coefficients["length"] == pytest.approx(0.8, abs=0.12)
    assert set(res.style_coefficients.index) == {"length", "headers", "lists", "bold"}
    assert res.style_coefficients[["headers", "lists", "bold"]].abs().max() == 0.0  # constant features: 0
    est = (res.ratings["rating"] - res.ratings["rating"].mean()) / ELO_PER_LOGIT
    truth = pd.Series(strength - strength.mean(), index=[f"m{i}" for i in range(6)])
    assert np.abs(est - truth[est.index]).max() < 0.15


def test_one_step_bootstrap_is_close_to_refitting_every_resample():
    df, _ = _battles(5000, 6, seed=3)
    one = bradley_terry(df, n_boot=200, seed=4)
    exact = bradley_terry(df, n_boot=200, seed=4, bootstrap="exact")
    spread = exact.replicates.std(axis=0)
    diff = np.abs(one.replicates - exact.replicates)  # the same resamples, replicate by replicate
    assert diff.mean() < 0.1 * spread.min()  # first-order exact; the largest gaps sit at extreme win rates
    width = exact.ratings["rating_ci_high"] - exact.ratings["rating_ci_low"]
    for end in ("rating_ci_low", "rating_ci_high"):
        assert ((one.ratings[end] - exact.ratings[end]).abs() < 0.15 * width).all()
    r = one.ratings
    assert ((r["rating_ci_low"] < r["rating"]) & (r["rating"] < r["rating_ci_high"])).all()


def test_unconnected_models_and_bad_options_are_farm_errors():
    df = pd.DataFrame({"instruction": ["q1", "q2"], "output_1": ["a", "b"], "output_2": ["c", "d"],
                       "generator_1": ["m0", "m2"], "generator_2": ["m1", "m3"], "p_output_2": [1.0, 0.0]})
    with pytest.raises(FarmError, match="never compared"):
        bradley_terry(df, n_boot=0)
    with pytest.raises(FarmError, match="ties"):
        bradley_terry(df, ties="maybe")


def test_leaderboard_cli_bt(tmp_path, capsys):
    from farm.eval.cli_leaderboard import main
    from farm.io import write_annotations
    from farm.types import Annotation, Pair

    df, _ = _battles(600, 4, seed=5)
    anns = [Annotation(Pair(r.instruction, r.output_1, r.output_2, generator_1=r.generator_1,
                            generator_2=r.generator_2), r.p_output_2, "judge") for r in df.itertuples()]
    path = write_annotations(tmp_path / "pairs.jsonl", anns)
    assert main([str(path), "--bt", "--style-control", "--n-boot", "50", "--out", str(tmp_path / "bt.csv")]) == 0
    out = capsys.readouterr().out
    assert "rating_ci_low" in out and "style coefficients" in out
    assert len(pd.read_csv(tmp_path / "bt.csv", index_col=0)) == 4
