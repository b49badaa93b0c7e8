"""Length-controlled win rate as AlpacaEval defines it: each model fitted alone (its LC does not depend on the
other models in the call), the shipped reference, the L1 solver against a brute-force optimum, the delta-method
SE against a bootstrap, and the published AlpacaEval LC on models the reference did not see."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval import leaderboard
from farm.eval.frames import to_frame
from farm.eval.glm import l1_logistic, l1_logistic_cv, soft_log_loss
from farm.eval.lc import length_controlled_winrates
from farm.eval.lc_reference import find_reference, fit_reference, load_references, save_reference


def _judged(n: int, theta: float, beta: float, mean_extra: float, seed: int, model: str = "m") -> pd.DataFrame:
    """A judge whose logit is θ + β·tanh(Δ/sd(Δ)), Δ = baseline − model length (AlpacaEval's sign): the model's
    equal-length win rate is σ(θ) exactly."""
    rng = np.random.default_rng(seed)
    base = rng.integers(300, 600, n)
    out2 = np.maximum(base + rng.normal(mean_extra, 400, n).round().astype(int), 1)
    delta = base - out2
    p = 1 / (1 + np.exp(-(theta + beta * np.tanh(delta / delta.std(ddof=1)))))
    return pd.DataFrame({"instruction": [f"q{i}" for i in range(n)], "input": "",
                         "output_1": ["a" * b for b in base], "output_2": ["b" * o for o in out2],
                         "generator_1": "base", "generator_2": model, "p_output_2": (rng.random(n) < p).astype(float)})


def test_l1_solver_reaches_the_brute_force_optimum():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    F = np.c_[rng.normal(size=(300, 2)), np.ones(300)]
    y = 1 / (1 + np.exp(-(F @ [1.5, 0.0, -0.7] + rng.normal(0, 1, 300))))  # soft targets
    weight = rng.uniform(0.1, 1, 300)
    for C in (0.01, 0.3, 100.0):
        w = l1_logistic(F, y, C, weight)
        # reference: split w = u − v, u, v ≥ 0, so the L1 term is smooth; L-BFGS-B with bounds
        def f(uv, C=C):
            ww = uv[:3] - uv[3:]
            return C * soft_log_loss(y, F @ ww, weight) + uv.sum()
        ref = minimize(f, np.ones(6), method="L-BFGS-B", bounds=[(0, None)] * 6, options={"ftol": 1e-15, "gtol": 1e-12})
        obj = C * soft_log_loss(y, F @ w, weight) + np.abs(w).sum()
        assert obj <= ref.fun + 1e-7
        np.testing.assert_allclose(w, ref.x[:3] - ref.x[3:], atol=1e-4)
    assert l1_logistic(F, y, 1e-4, weight).tolist() == [0.0, 0.0, 0.0]  # a tiny C zeroes everything
    _, C = l1_logistic_cv(F, y, weight)
    assert C > 1e-3  # cross-validation does not pick the all-zero model on informative data


def test_lc_recovers_the_equal_length_win_rate_of_a_length_biased_judge():
    # true equal-length win rate σ(−0.5) = 37.8%; the judge loves length and the model writes 400 chars more
    df = _judged(4000, theta=-0.5, beta=-2.0, mean_extra=400, seed=0)
    lb = leaderboard(df, n_boot=0, lc=True)
    truth = 100 / (1 + np.exp(0.5))
    assert lb.loc["m", "win_rate"] > truth + 15  # the raw win rate is inflated by length
    assert lb.loc["m", "lc_reference"] == "none"  # no reference knows these instructions
    assert lb.loc["m", "length_controlled_winrate"] == pytest.approx(truth, abs=3 * lb.loc["m", "lc_standard_error"])
    assert lb.loc["m", "lc_length_coef"] == pytest.approx(-2.0, abs=0.4)


def test_lc_standard_error_matches_a_bootstrap():
    df = _judged(400, theta=-0.2, beta=-1.5, mean_extra=100, seed=1)
    se = length_controlled_winrates(df, reference=None).loc["m", "lc_standard_error"]
    rng = np.random.default_rng(2)
    boots = []
    for _ in range(60):
        sample = df.iloc[rng.integers(0, len(df), len(df))].copy()
        sample["instruction"] = [f"r{j}" for j in range(len(df))]  # each draw its own row
        boots.append(length_controlled_winrates(sample, reference=None).loc["m", "length_controlled_winrate"])
    assert 0.7 < se / np.std(boots, ddof=1) < 1.4


def test_a_models_lc_does_not_depend_on_the_other_models_in_the_call():
    ref = fit_reference(pd.concat([_judged(300, 0.3 * s, -1.5, 100 * s, seed=s, model=f"r{s}") for s in range(3)]),
                        name="t")
    models = [_judged(300, 0.2 * s - 0.4, -1.5, 150 * s - 200, seed=10 + s, model=f"m{s}") for s in range(5)]
    alone = length_controlled_winrates(models[0], ref)
    for k in (2, 3, 5):
        together = length_controlled_winrates(pd.concat(models[:k], ignore_index=True), ref)
        pd.testing.assert_series_equal(together.loc["m0"], alone.loc["m0"])  # identical, not just close


def test_the_reference_rescues_a_model_whose_lengths_do_not_vary(tmp_path):
    # "short" always writes ~1000 chars less than the baseline: alone, its slope and quality are confounded;
    # the reference (fitted on other models of the same judge) supplies the slope through the gamed rows
    others = [_judged(800, theta=0.0, beta=-1.5, mean_extra=e, seed=s, model=f"m{s}") for s, e in ((3, 0), (4, 200),
                                                                                                  (6, -200))]
    ref = fit_reference(pd.concat(others, ignore_index=True), name="mine")
    assert ref.slope == pytest.approx(-1.5, abs=0.3) and len(ref.difficulty) == 800
    short = _judged(800, theta=0.0, beta=-1.5, mean_extra=-1000, seed=5, model="short")
    short["instruction"] = others[0]["instruction"]  # the same instructions
    with_ref = length_controlled_winrates(short, ref).loc["short"]
    assert with_ref["length_controlled_winrate"] == pytest.approx(50, abs=7)  # truth: σ(0) = 50%
    # the reference file round-trips and is found by baseline and instructions
    path = save_reference(ref, tmp_path / "ref.json")
    assert json.loads(path.read_text())["references"][0]["name"] == "mine"
    assert find_reference(to_frame(short), str(path)).slope == ref.slope
    assert load_references(path)[0].difficulty == ref.difficulty


def test_shipped_reference_and_auto_choice(shared_data):
    refs = {r.name: r for r in load_references()}
    assert set(refs) == {"alpaca_eval"}
    ref = refs["alpaca_eval"]
    assert ref.any_baseline and len(ref.difficulty) == 805 and [g["name"] for g in ref.gamed] == [
        "gpt4_1106_preview_verbose", "gpt4_1106_preview_concise"]
    F, y = ref.gamed_rows()  # the explicit gamed rows: x from real lengths, no quality term, targets in (0, 1)
    assert F.shape == (2 * 805, 3) and (F[:, 2] == 0).all() and ((y > 0) & (y < 1)).all()
    assert F[:805, 0].mean() < 0 < F[805:, 0].mean()  # the verbose rewrite is longer than the baseline
    assert 0.5 < ref.calibration["b"] < 2 and ref.calibration["lc_rmse"] < ref.calibration["lc_rmse_unscaled"]
    ae1 = to_frame(shared_data / "alpaca_eval/annotations_alpaca_eval_gpt4/gpt4.json.gz")
    assert find_reference(ae1).name == "alpaca_eval"  # baseline text_davinci_003: AlpacaEval's for any baseline
    assert find_reference(ae1.assign(generator_1="my_baseline")).name == "alpaca_eval"
    assert find_reference(ae1.assign(instruction=ae1["instruction"] + " (rephrased)")) is None


def test_alpaca_eval_reference_rebuilt_from_a_checkout(tmp_path):
    """farm.eval.lc_alpaca on a made-up checkout with a known difficulty scale: the joint fit's d, mapped by
    the fitted (a, b), reproduces the published LC, and the gamed rows follow the published weights."""
    from farm.eval.glm import sigmoid
    from farm.eval.lc_alpaca import JUDGE, LEADERBOARD, WEIGHTS, build_alpaca_eval_reference
    from farm.eval.lc_reference import instruction_hash

    rng = np.random.default_rng(3)
    n, models = 300, [f"m{j}" for j in range(6)]
    d_true = rng.normal(0, 1.2, n)
    base = [f"base answer {'x' * int(k)}" for k in rng.integers(50, 400, n)]
    for j, m in enumerate(models):
        theta = -1.5 + 0.6 * j
        lens = rng.integers(50, 700, n)
        p = sigmoid(theta + d_true)
        rows = [{"instruction": f"q{i}", "output_1": base[i], "output_2": "y" * int(lens[i]),
                 "generator_1": "gpt4_1106_preview", "generator_2": m, "annotator": JUDGE,
                 "preference": 1 + float(p[i])}
                for i in range(n)]
        (tmp_path / f"results/{m}/{JUDGE}").mkdir(parents=True)
        (tmp_path / f"results/{m}/{JUDGE}/annotations.json").write_text(json.dumps(rows))
    # published weights (β, γ, θ) and LC made with the true difficulty; LC = 100 mean σ(θ + γ d)
    W = pd.DataFrame({"np.tanh(std_delta_len)": -1.0, "instruction_difficulty": rng.uniform(0.5, 1.2, 12),
                      "not_gamed_baseline.astype(float)": rng.uniform(-3, 2, 12)},
                     index=[f"w{k}" for k in range(10)] + ["gpt4_1106_preview_verbose", "gpt4_1106_preview_concise"])
    lc = 100 * sigmoid(W.iloc[:, 2].to_numpy()[:, None] + W.iloc[:, 1].to_numpy()[:, None] * d_true[None]).mean(1)
    (tmp_path / WEIGHTS).parent.mkdir(parents=True)
    W.to_csv(tmp_path / WEIGHTS)
    (tmp_path / LEADERBOARD).parent.mkdir(parents=True)
    pd.DataFrame({"length_controlled_winrate": lc}, index=W.index).to_csv(tmp_path / LEADERBOARD)
    for name, extra in (("gpt4_1106_preview", 0), ("gpt4_1106_preview_verbose", 300), ("gpt4_1106_preview_concise", -40)):
        (tmp_path / f"results/{name}").mkdir(parents=True, exist_ok=True)
        outs = [{"instruction": f"q{i}", "output": base[i] + "z" * max(extra + int(rng.integers(0, 50)), 0)}
                for i in range(n)]
        (tmp_path / f"results/{name}/model_outputs.json").write_text(json.dumps(outs))

    ref = build_alpaca_eval_reference(tmp_path)
    d = np.array([ref.difficulty[instruction_hash(f"q{i}\x1f")] for i in range(n)])
    assert np.corrcoef(d, d_true)[0, 1] > 0.9
    assert ref.calibration["lc_rmse"] < 0.5 < ref.calibration["lc_rmse_unscaled"]  # the scale was needed
    verbose = ref.gamed[0]
    wv = W.loc["gpt4_1106_preview_verbose"]
    x = np.array(verbose["x"])
    np.testing.assert_allclose(verbose["p"], sigmoid(wv.iloc[0] * x + wv.iloc[1] * d + wv.iloc[2]), atol=1e-5)
    assert (x < 0).mean() > 0.95  # longer than the baseline: Δ = baseline − rewrite < 0
    with pytest.raises(FarmError, match="no AlpacaEval 2 annotation files"):
        build_alpaca_eval_reference(tmp_path / "nowhere")
    (tmp_path / WEIGHTS).unlink()
    with pytest.raises(FarmError, match="missing from the alpaca_eval checkout") as e:
        build_alpaca_eval_reference(tmp_path)
    assert "baseline_gpt4_1106_preview.csv" in str(e.value)


def test_lc_close_to_alpaca_eval_1_on_models_the_reference_did_not_see(shared_data):
    # the reference fitted on 15 of the 20 AlpacaEval 1 models; LC of the other 5 against the published LC
    files = sorted((shared_data / "alpaca_eval/annotations_alpaca_eval_gpt4").glob("*.json.gz"))
    frame = to_frame(files)
    models = sorted(frame["generator_2"].unique())
    test = models[0::4]
    ref = fit_reference(frame[~frame["generator_2"].isin(test)], name="fold0")
    ours = length_controlled_winrates(frame[frame["generator_2"].isin(test)], ref)["length_controlled_winrate"]
    pub = pd.read_csv(shared_data / "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv",
                      index_col=0)["length_controlled_winrate"]
    err = ours - pub[ours.index]
    assert len(err) == 5 and err.abs().mean() < 1.5 and err.abs().max() < 3.0


def test_shipped_lc_on_alpaca_eval_1(shared_data):
    files = sorted((shared_data / "alpaca_eval/annotations_alpaca_eval_gpt4").glob("*.json.gz"))
    ours = leaderboard(files, n_boot=0, lc=True)
    pub = pd.read_csv(shared_data / "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv",
                      index_col=0)["length_controlled_winrate"]
    err = ours["length_controlled_winrate"] - pub[ours.index]
    assert (ours["lc_reference"] == "alpaca_eval").all()
    # held out: the shipped reference was rebuilt from AlpacaEval 2 files only
    assert err.abs().mean() < 0.6 and abs(err.mean()) < 0.4 and err.abs().median() < 0.3
    assert ours.loc["cohere", "length_controlled_winrate"] < ours.loc["cohere", "win_rate"] - 15
    assert ours.loc["text_davinci_001", "length_controlled_winrate"] > ours.loc["text_davinci_001", "win_rate"]
