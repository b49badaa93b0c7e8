"""Simulated judges of the task world: determinism, human draws, pools, ranking policies, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from farm.annotators.synthetic import (
    ANNOTATOR_NAMES,
    POOL_LENGTH,
    POOL_POSITION,
    PRESETS,
    TARGETS,
    TRAIN_FLIP,
    SyntheticJudge,
    build_synthetic,
)
from farm.errors import FarmError
from farm.types import Annotator, Pair
from farm.worlds import calibration
from farm.worlds.tasks import build, calibration_pairs, quality_parts


@pytest.fixture(scope="module")
def world():
    return build(0, sft=0, preference=1000, unlabeled=0)


@pytest.fixture(scope="module")
def pairs():
    return calibration_pairs(4000, 0)


def prefs(annotator: Annotator, pairs, seed: int = 0) -> np.ndarray:
    return np.array([a.preference for a in annotator.annotate(pairs, seed=seed)], dtype=float)


def test_every_named_annotator_is_an_annotator(world, pairs):
    for name in ANNOTATOR_NAMES:
        j = world.annotator(name)
        assert isinstance(j, Annotator), name
        anns = j.annotate(pairs[:20])
        assert [a.pair for a in anns] == pairs[:20]
        assert all(a.preference is not None and 0 <= a.preference <= 1 for a in anns)


def test_verdicts_are_deterministic_and_batch_independent(world, pairs):
    j = world.annotator("chatgpt_like")
    whole = prefs(j, pairs[:300])
    pieces = np.concatenate([prefs(j, pairs[i:min(i + 37, 300)]) for i in range(0, 300, 37)])
    assert (whole == pieces).all()
    assert (prefs(j, pairs[:300], seed=1) != whole).any()


def test_human_draws_are_independent_people(world, pairs):
    draws = np.stack([prefs(world.annotator("human", seed=k), pairs[:1000]) for k in range(4)])
    assert len({world.annotator("human", seed=k).identity() for k in range(4)}) == 4
    disagree = np.mean(draws[0] != draws[1])
    assert 0.2 < disagree < 0.5  # humans disagree often, as real ones do (LOO agreement ≈ 66%)
    assert set(np.unique(draws)) <= {0.0, 1.0}


def test_identical_outputs_tie_and_soft_judge_is_a_probability(world):
    p = [Pair("Add the two numbers.", "19", "19", input="12 + 7")]
    assert prefs(world.annotator("human"), p)[0] == 0.5
    soft = prefs(world.annotator("gpt4_turbo_like"), calibration_pairs(200, 1))
    assert ((soft > 0) & (soft < 1)).all() and len(np.unique(soft)) > 100


def test_gold_and_longest_rules(world):
    i, x = "Add the two numbers.", "12 + 7"
    p = [Pair(i, "20", "19", input=x), Pair(i, "19", "Sure! Here is the answer: 20", input=x)]
    assert prefs(world.annotator("gold"), p).tolist() == [1.0, 0.0]
    assert prefs(world.annotator("longest"), p).tolist() == [0.5, 1.0]  # equal lengths tie


def test_pool_uses_every_member_and_training_pool_flips_a_quarter(world, pairs):
    anns = world.annotator("eval_pool").annotate(pairs)
    members = {a.meta["member"] for a in anns}
    assert len(members) == 13
    ev = prefs(world.annotator("eval_pool"), pairs)
    tr = prefs(world.annotator("alpacafarm_pool"), pairs)
    assert abs(np.mean(ev != tr) - TRAIN_FLIP) < 0.025


def test_judges_rank_a_better_policy_above_a_worse_one(world):
    rng = np.random.default_rng(0)
    prompts = world.preference
    good = [world.sample_demo(p, rng, skill=0.9) for p in prompts]
    bad = [world.sample_demo(p, rng, skill=0.3) for p in prompts]
    pairs = [Pair(p["instruction"], b, g, input=p["input"]) for p, g, b in zip(prompts, good, bad)
             if g != b]
    for name in ("gold", "human", "eval_pool", "alpacafarm_pool", "chatgpt_like"):
        win = prefs(world.annotator(name), pairs).mean()
        se = 0.5 / np.sqrt(len(pairs))
        assert win > 0.5 + 3 * se, (name, win)


def test_build_synthetic_configs():
    j = build_synthetic({"backend": "synthetic", "world": "tasks", "preset": "human"}, seed=3)
    assert j.draw == 3 and j.params == PRESETS["human"]
    j = build_synthetic({"backend": "synthetic", "preset": "gpt4_like", "length": 2.0, "draw": 1}, seed=9)
    assert j.params.length == 2.0 and j.draw == 1
    assert "flip(strength=0.1)" in build_synthetic({"preset": "eval_pool", "flip": 0.1}).identity()
    for bad, match in [({"preset": "gpt5_like"}, "unknown simulated annotator"),
                       ({"preset": "human", "temperature": 1}, "unknown judge parameter"),
                       ({"backend": "openai", "preset": "human"}, "backend"),
                       ({"preset": "human", "world": "mars"}, "unknown world"),
                       ({"world": "tasks"}, "needs a preset"),
                       ({"preset": "eval_pool", "beta": 1.0}, "only apply to single judges")]:
        with pytest.raises(FarmError, match=match):
            build_synthetic(bad)


def test_expected_figures_match_sampled_ones(pairs):
    h = SyntheticJudge("human", quality_parts, PRESETS["human"]).probabilities(pairs)
    draws = [SyntheticJudge("human", quality_parts, PRESETS["human"], draw=k).annotate(pairs) for k in range(4)]
    assert abs(calibration.expected_loo(h) - calibration.measured_loo(draws)) < 1.5
    assert abs(calibration.expected_p_longer(h, pairs) - calibration.measured_p_longer(draws[0])) < 0.02


@pytest.fixture(scope="module")
def table(pairs):
    return calibration.calibration_table(pairs, quality_parts, dict(TARGETS))


def test_simulated_human_is_calibrated_within_two_points(table):
    human = table.set_index("judge").loc["human"]
    assert abs(human.agreement - TARGETS["human"][1]) <= 2.0
    assert abs(human.p_longer - TARGETS["human"][2]) * 100 <= 2.0
    assert abs(human.p_first - TARGETS["human"][3]) * 100 <= 2.0


def test_llm_like_presets_and_training_pool_are_calibrated(table):
    t = table.set_index("judge")
    for name in [n for n in PRESETS if n != "human"] + ["alpacafarm_pool"]:
        _, agree, longer, first = TARGETS[name]
        assert abs(t.loc[name, "agreement"] - agree) <= 2.0, name
        assert abs(t.loc[name, "p_longer"] - longer) * 100 <= 2.0, name
        assert abs(t.loc[name, "p_first"] - first) * 100 <= 2.0, name
    # the gold judge agrees with the human majority more than any simulated LLM judge does
    assert t.loc["gold", "agreement"] > t.drop(index=["gold"])["agreement"].max()


def test_refit_reproduces_the_presets_in_code(pairs):
    fitted, (pool_length, pool_position) = calibration.fit_all(pairs, quality_parts, dict(TARGETS))
    assert pool_length == pytest.approx(POOL_LENGTH, abs=0.02)
    assert pool_position == pytest.approx(POOL_POSITION, abs=0.02)
    for name, params in fitted.items():
        for field in ("beta", "length", "position"):
            assert getattr(params, field) == pytest.approx(getattr(PRESETS[name], field), abs=0.02), (name, field)


def test_targets_from_shared_leaderboard_equal_the_copied_ones(shared_data):
    loaded = calibration.load_targets(shared_data)
    for name, (row, agree, longer, first) in TARGETS.items():
        assert loaded[name][0] == row
        assert loaded[name][1:] == pytest.approx((agree, longer, first), abs=0.01)


def test_calibrate_command(tmp_path, capsys):
    from farm.worlds.cli import main

    rc = main(["calibrate", "--pairs", "400", "--plot", str(tmp_path / "c.png"), "--csv", str(tmp_path / "c.csv")])
    out = capsys.readouterr().out
    assert "human" in out and "gpt4_like" in out and rc in (0, 1)
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "c.csv").exists()
