"""Leaderboard: AlpacaEval's definitions on hand-worked data, the bootstrap against a plain loop, and the real
AlpacaEval 1 / 2 leaderboards recomputed from their annotation files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from farm.errors import FarmError
from farm.eval import compare_models, leaderboard, read_leaderboard_csv, to_frame
from farm.eval.stats import bootstrap_counts
from farm.eval.winrate import PreferenceMatrix
from farm.io import write_annotations
from farm.types import Annotation, Pair


def _ann(i: int, model: str, p: float | None, out: str = "x", base: str = "base") -> Annotation:
    return Annotation(Pair(f"instruction {i}", f"b{i}", out, generator_1=base, generator_2=model), p, "judge")


def test_alpaca_eval_definitions_by_hand():
    # p = [1, 0, 0.5, 1, None]: n_total 4; win rate (1+0+.5+1)/4; SE = std([1,0,.5,1], ddof=1)/2
    anns = [_ann(i, "m", p, out="ab" if i % 2 else "abcd") for i, p in enumerate([1.0, 0.0, 0.5, 1.0, None])]
    anns += [_ann(i, "w", p) for i, p in enumerate([0.7, 0.2, 0.5])]  # a weighted judge
    lb = leaderboard(anns, n_boot=0)
    m, w = lb.loc["m"], lb.loc["w"]
    assert m["win_rate"] == pytest.approx(62.5)
    assert m["standard_error"] == pytest.approx(math.sqrt(0.6875 / 3) / 2 * 100)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"], m["n_invalid"]) == (2, 1, 1, 4, 1)
    assert m["discrete_win_rate"] == pytest.approx(62.5)
    assert m["avg_length"] == 3  # int(mean(4, 2, 4, 2, 4)) = int(3.2)
    assert w["win_rate"] == pytest.approx(140 / 3)
    assert w["discrete_win_rate"] == pytest.approx(50.0)  # 0.7 → 1, 0.2 → 0, 0.5 stays a draw
    assert (w["n_wins"], w["n_wins_base"], w["n_draws"]) == (1, 1, 1)
    assert list(lb.index) == ["m", "w"]  # sorted by win rate


def test_alpaca_eval_codes_in_a_frame_are_converted_at_the_edge():
    df = pd.DataFrame({"instruction": ["a", "b", "c", "d"], "output_1": "x", "output_2": "y",
                       "generator_2": "m", "preference": [2, 1, 0, 1.5]})
    f = to_frame(df)
    assert f["p_output_2"].tolist() == [1.0, 0.0, 0.5, 0.5]
    assert leaderboard(df, n_boot=0).loc["m", "n_draws"] == 2


def test_bad_input_is_a_farm_error(tmp_path):
    with pytest.raises(FarmError, match="p_output_2"):
        to_frame(pd.DataFrame({"instruction": ["a"], "output_2": ["b"], "p_output_2": [1.5]}))
    with pytest.raises(FarmError, match="not found"):
        leaderboard([tmp_path / "missing.json"])
    two = [_ann(0, "m", 1.0, base="b1"), _ann(1, "m", 0.0, base="b2")]
    with pytest.raises(FarmError, match="several baselines"):
        leaderboard(two)
    assert leaderboard(two, baseline="b1", n_boot=0).loc["m", "n_total"] == 1


def test_bootstrap_is_deterministic_and_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    anns = [_ann(i, m, float(rng.choice([0.0, 0.5, 1.0])) if rng.random() > 0.1 else None)
            for m in ("a", "b", "c") for i in range(40)]
    one = leaderboard(anns, n_boot=300, seed=7)
    two = leaderboard(anns, n_boot=300, seed=7)
    other = leaderboard(anns, n_boot=300, seed=8)
    pd.testing.assert_frame_equal(one, two)
    assert not np.allclose(one["win_rate_ci_low"], other["win_rate_ci_low"])
    assert (one["win_rate_ci_low"] < one["win_rate"]).all() and (one["win_rate"] < one["win_rate_ci_high"]).all()

    # the matrix product equals re-scoring each resample by hand, same draw for every model
    frame = to_frame(anns)
    mat = PreferenceMatrix.from_frame(frame)
    fast = mat.bootstrap_win_rates(20, seed=5)
    w = bootstrap_counts(len(mat.keys), 20, seed=5)
    labels = {}  # (model, instruction, input) → valid p's
    for r in frame.itertuples():
        if not np.isnan(r.p_output_2):
            labels.setdefault((r.generator_2, r.instruction, r.input), []).append(r.p_output_2)
    for b in range(20):
        chosen = np.repeat(np.arange(len(mat.keys)), w[b].astype(int))
        for j, model in enumerate(mat.models):
            vals = [p for k in chosen for p in labels.get((model, *mat.keys[k]), [])]
            assert fast[b, j] == pytest.approx(np.mean(vals) * 100)


def test_paired_comparison_of_two_models_by_hand():
    a = [_ann(i, "a", p) for i, p in enumerate([1.0, 1.0, 0.5, 0.0, None])]
    b = [_ann(i, "b", p) for i, p in enumerate([0.0, 1.0, 0.0, 0.0, 1.0])]
    row = compare_models(a + b, "a", "b", n_boot=500).iloc[0]
    # common instructions 0-3: differences [1, 0, .5, 0]
    assert row["n"] == 4
    assert row["difference"] == pytest.approx(37.5)
    assert row["standard_error"] == pytest.approx(math.sqrt(0.6875 / 3) / 2 * 100)
    from scipy.stats import ttest_rel

    assert row["p_value_t"] == pytest.approx(ttest_rel([1, 1, .5, 0], [0, 1, 0, 0]).pvalue)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    with pytest.raises(FarmError, match="unknown model"):
        compare_models(a + b, "a", "zzz")


def test_files_round_trip_through_our_format(tmp_path):
    anns = [_ann(i, m, p) for m, ps in (("x", [1.0, 0.5]), ("y", [0.0, 0.25])) for i, p in enumerate(ps)]
    path = write_annotations(tmp_path / "ann.jsonl", anns)
    pd.testing.assert_frame_equal(leaderboard([path], n_boot=50), leaderboard(anns, n_boot=50))
    # a file that does not name its model: the file name does (AlpacaEval results/<model>/...)
    nameless = write_annotations(tmp_path / "gpt-3.5-turbo.json.gz",
                                 [_ann(i, "", p) for i, p in enumerate([1.0, 0.0, 1.0])])
    assert leaderboard([nameless], n_boot=0).index.tolist() == ["gpt-3.5-turbo"]


# ----- real data: the published AlpacaEval leaderboards -----

def _files(shared_data, folder):
    files = sorted((shared_data / "alpaca_eval" / folder).glob("*.json.gz"))
    if not files:
        pytest.skip(f"no files in {folder}")
    return files


@pytest.fixture(scope="module")
def alpaca_eval_1(shared_data):
    files = _files(shared_data, "annotations_alpaca_eval_gpt4")
    assert len(files) == 20
    return to_frame(files)


def test_reproduces_alpaca_eval_1_leaderboard_exactly(shared_data, alpaca_eval_1):
    ours = leaderboard(alpaca_eval_1, n_boot=0)
    ref = read_leaderboard_csv(shared_data / "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv")
    assert set(ours.index) <= set(ref.index) and len(ours) == 20
    ref = ref.loc[ours.index]
    for col in ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate"):
        np.testing.assert_allclose(ours[col].to_numpy(float), ref[col].to_numpy(float), rtol=0, atol=1e-6,
                                   err_msg=col)
    np.testing.assert_array_equal(ours["avg_length"].to_numpy(), ref["avg_length"].to_numpy())


def test_reproduces_alpaca_eval_2_weighted_win_rates(shared_data):
    files = _files(shared_data, "annotations_weighted_gpt4_turbo")
    ours = leaderboard(files, n_boot=0, lc=True)
    ref = read_leaderboard_csv(
        shared_data / "alpaca_eval/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
    ).loc[ours.index]
    for col in ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate"):
        np.testing.assert_allclose(ours[col].to_numpy(float), ref[col].to_numpy(float), rtol=0, atol=1e-6,
                                   err_msg=col)
    # our LC is not theirs (no gamed-baseline data, own difficulty): same order, documented differences
    from scipy.stats import spearmanr

    assert spearmanr(ours["length_controlled_winrate"], ref["length_controlled_winrate"]).statistic == 1.0
    assert (ours["length_controlled_winrate"] > ours["win_rate"]).all()  # all 4 are shorter than the baseline


def test_instruction_keys_survive_without_pyarrow_string_storage():
    # regression: pandas' python-backed strings (the default without pyarrow) drop a NUL separator on
    # concatenation, so (instruction, input) keys could not be split back (LC crashed on a fresh machine)
    import pandas as pd

    from farm.eval.frames import KEY_SEP, codes, key_strings

    df = pd.DataFrame({"instruction": ["Add."] * 3, "input": ["1 + 2", "3 + 4", "1 + 2"]},
                      dtype=pd.StringDtype("python"))
    c, uniques = codes(key_strings(df), None)
    assert len(uniques) == 2 and c[0] == c[2] != c[1]
    assert [tuple(k.split(KEY_SEP, 1)) for k in uniques] == [("Add.", "1 + 2"), ("Add.", "3 + 4")]
