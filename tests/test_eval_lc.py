"""Length-controlled win rate: recovers the equal-length win rate of a length-biased judge, and its delta-method
standard error matches a bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from farm.eval import leaderboard
from farm.eval.lc import length_controlled_winrates


def _judged(n: int, theta: float, beta: float, mean_extra: float, seed: int, model: str = "m") -> pd.DataFrame:
    """A judge whose logit is θ + β·tanh(Δ/σ): the model's equal-length win rate is σ(θ) exactly."""
    rng = np.random.default_rng(seed)
    base = rng.integers(300, 600, n)
    out2 = np.maximum(base + rng.normal(mean_extra, 400, n).round().astype(int), 1)
    delta = out2 - base
    p = 1 / (1 + np.exp(-(theta + beta * np.tanh(delta / delta.std(ddof=1)))))
    return pd.DataFrame({"instruction": [f"q{i}" for i in range(n)], "input": "",
                         "output_1": ["a" * b for b in base], "output_2": ["b" * o for o in out2],
                         "generator_1": "base", "generator_2": model, "p_output_2": (rng.random(n) < p).astype(float)})


def test_lc_recovers_the_equal_length_win_rate_of_a_length_biased_judge():
    # true equal-length win rate σ(−0.5) = 37.8%; the judge loves length and the model writes 400 chars more
    df = _judged(4000, theta=-0.5, beta=2.0, mean_extra=400, seed=0)
    lb = leaderboard(df, n_boot=0, lc=True)
    truth = 100 / (1 + np.exp(0.5))
    assert lb.loc["m", "win_rate"] > truth + 15  # the raw win rate is inflated by length
    assert lb.loc["m", "length_controlled_winrate"] == pytest.approx(truth, abs=3 * lb.loc["m", "lc_standard_error"])
    assert lb.loc["m", "lc_length_coef"] == pytest.approx(2.0, abs=0.4)


def test_lc_standard_error_matches_a_bootstrap():
    df = _judged(400, theta=-0.2, beta=1.5, mean_extra=100, seed=1)
    se = length_controlled_winrates(df, difficulty=None).loc["m", "lc_standard_error"]
    rng = np.random.default_rng(2)
    boots = []
    for _ in range(60):
        sample = df.iloc[rng.integers(0, len(df), len(df))].copy()
        sample["instruction"] = [f"r{j}" for j in range(len(df))]  # each draw its own row
        boots.append(length_controlled_winrates(sample, difficulty=None).loc["m", "length_controlled_winrate"])
    assert 0.7 < se / np.std(boots, ddof=1) < 1.4


def test_a_shared_slope_rescues_a_model_whose_lengths_do_not_vary():
    # model "short" always writes ~1000 chars less than the baseline: alone, its slope is unidentified
    ok = [_judged(800, theta=0.0, beta=1.5, mean_extra=e, seed=s, model=f"m{s}") for s, e in ((3, 0), (4, 200))]
    short = _judged(800, theta=0.0, beta=1.5, mean_extra=-1000, seed=5, model="short")
    lc = length_controlled_winrates(pd.concat([*ok, short], ignore_index=True), difficulty=None)
    assert lc.loc["short", "length_controlled_winrate"] == pytest.approx(50, abs=8)  # truth: σ(0) = 50%
    assert lc.loc["short", "lc_length_coef"] == pytest.approx(1.5, abs=0.6)
