"""Simulated judges and pools as folders (annotator_prompts/<name>/ with backend: synthetic): the same verdicts
as the Python definitions they replaced, `farm ls` shows them, a copied folder is a variant, one Pool, one swap."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from farm.annotators import load_annotator
from farm.annotators.folders import is_simulated, simulated_names
from farm.annotators.noise import ConstantJudge, Swap, swap
from farm.annotators.pool import Pool, RandomSwap
from farm.annotators.synthetic import (
    ANNOTATOR_NAMES,
    POOL_MEMBERS,
    PRESETS,
    TRAIN_FLIP,
    SyntheticPool,
    make_annotator,
)
from farm.config import read_yaml
from farm.data import ANNOTATOR_PROMPTS
from farm.errors import FarmError
from farm.types import Pair
from farm.worlds.tasks import build, calibration_pairs, quality_parts

# sha256 (first 16 hex digits) of [preference, annotator, meta] per pair, recorded from the Python definitions
# the folders replaced (main at d7bf44a: POOL_MEMBERS, SyntheticPool and make_annotator in synthetic.py), with the
# same call as below: make_annotator(name, quality_parts, seed=s) on calibration_pairs(300, 3), annotate(seed=s + 1).
# Soft verdicts (gpt4_turbo_like's) are rounded to 9 decimals first: their last bits move with the numpy build (the
# full-precision digest of d7bf44a's own code changed under another numpy), the verdicts do not.
BEFORE = {("alpacafarm_pool", 0): "68a43669b1332d76", ("eval_pool", 2): "87a63a5e199eedd6",
          ("human", 2): "db5f750e75114d17", ("gpt4_turbo_like", 0): "1d79057f0b7b4c83"}


def digest(annotations) -> str:
    rows = [[None if a.preference is None else round(a.preference, 9), a.annotator, json.dumps(a.meta)]
            for a in annotations]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name,seed", sorted(BEFORE))
def test_folders_give_the_verdicts_the_python_definitions_gave(name, seed):
    pairs = calibration_pairs(300, 3)
    assert digest(make_annotator(name, quality_parts, seed=seed).annotate(pairs, seed=seed + 1)) == BEFORE[name, seed]


def test_every_simulated_name_is_a_folder_and_the_world_loads_it():
    assert set(ANNOTATOR_NAMES) == {"gold", "longest", *PRESETS, "alpacafarm_pool", "eval_pool"}
    assert set(simulated_names()) == set(ANNOTATOR_NAMES)
    world = build(0, sft=0, preference=0, unlabeled=0, eval=4)
    for name in ANNOTATOR_NAMES:
        assert is_simulated(ANNOTATOR_PROMPTS / name)
        # the world's annotator(name) and load_annotator(name) read the same folder
        assert world.annotator(name, seed=1).identity() == load_annotator(name, seed=1).identity(), name
    assert not is_simulated(ANNOTATOR_PROMPTS / "gpt4o_mini_basic")
    assert not is_simulated(ANNOTATOR_PROMPTS / "pool_api_mix")


def test_training_pool_is_the_evaluation_pool_plus_its_flips():
    train, ev = (read_yaml(ANNOTATOR_PROMPTS / n / "config.yaml") for n in ("alpacafarm_pool", "eval_pool"))
    assert train["members"] == ev["members"] and len(POOL_MEMBERS) == 13
    assert train["noise"] == {"flip": TRAIN_FLIP} and TRAIN_FLIP == 0.25 and "noise" not in ev
    pairs = calibration_pairs(400, 5)
    t = make_annotator("alpacafarm_pool", quality_parts).annotate(pairs)
    e = make_annotator("eval_pool", quality_parts).annotate(pairs)
    # the same member per pair; the flips are the only difference
    assert [a.meta["member"] for a in t] == [a.meta["member"] for a in e]
    assert all(a.preference in (b.preference, 1 - b.preference) for a, b in zip(t, e))
    assert {a.annotator for a in t} == {"alpacafarm_pool"} and {a.annotator for a in e} == {"eval_pool"}


def test_a_copied_folder_is_a_variant(tmp_path):
    judge = tmp_path / "sharp_gpt4"
    shutil.copytree(ANNOTATOR_PROMPTS / "gpt4_like", judge)
    (judge / "config.yaml").write_text((judge / "config.yaml").read_text() + "beta: 9.0\n")
    j = load_annotator(str(judge))
    assert j.name == "sharp_gpt4" and j.params.beta == 9.0 and j.params.length == PRESETS["gpt4_like"].length
    pool = tmp_path / "gentle_pool"
    shutil.copytree(ANNOTATOR_PROMPTS / "alpacafarm_pool", pool)
    text = (pool / "config.yaml").read_text().replace("noise: {flip: 0.25}", "noise: {flip: 0.1}")
    (pool / "config.yaml").write_text(text)
    p = load_annotator(str(pool))
    assert "flip(strength=0.1)" in p.identity() and '"pool": "gentle_pool"' in p.identity()
    assert is_simulated(pool) and is_simulated(judge)
    (judge / "config.yaml").write_text((judge / "config.yaml").read_text() + "temperature: 1.0\n")
    with pytest.raises(FarmError, match="unknown judge parameter"):
        load_annotator(str(judge))


def test_farm_ls_shows_the_simulated_folders(capsys):
    from farm.ls import main

    assert main(["judges"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["alpacafarm_pool"] == ["pool", "synthetic"] and rows["eval_pool"] == ["pool", "synthetic"]
    assert rows["human"] == ["judge", "synthetic", "human"] and rows["pool_api_mix"] == ["pool", "pool"]


def test_one_pool_class_and_one_swap():
    pairs = [Pair(f"i{k}", "a" * k, "b") for k in range(1, 60)]
    members = [ConstantJudge(0.0, "zero"), ConstantJudge(1.0, "one")]
    alpaca = SyntheticPool("p", members)
    assert isinstance(alpaca, Pool) and alpaca.draw == "alpacafarm"
    anns = alpaca.annotate(pairs)
    assert {a.annotator for a in anns} == {"p"} and {a.meta["member"] for a in anns} == {"zero", "one"}
    # the AlpacaFarm draw is seeded by the members, not the pool's name; the weighted one by the name
    assert [a.meta["member"] for a in SyntheticPool("q", members).annotate(pairs)] == [a.meta["member"] for a in anns]
    weighted = [a.annotator for a in Pool("p", members, [1, 1]).annotate(pairs)]
    assert weighted != [a.annotator for a in Pool("q", members, [1, 1]).annotate(pairs)]
    with pytest.raises(ValueError, match="weights must be equal"):
        Pool("p", members, [1, 2], draw="alpacafarm")
    # RandomSwap and the swap transform are one class at two rates
    assert isinstance(RandomSwap(members[0], "s"), Swap) and isinstance(swap(members[0]), Swap)
    always = swap(ConstantJudge(1.0)).annotate(pairs)
    assert all(a.preference == 0.0 and a.meta["swapped"] and a.meta["noise"] == ["swap"] for a in always)
    coin = RandomSwap(ConstantJudge(1.0), "s").annotate(pairs)
    assert 10 < sum(a.meta["swapped"] for a in coin) < 50 and all("noise" not in a.meta for a in coin)
    assert [a.preference for a in coin] == [0.0 if a.meta["swapped"] else 1.0 for a in coin]


def test_a_member_override_applies_to_that_member_only(tmp_path):
    pairs = [Pair(f"instruction {i}", f"first {i}", f"second {i}") for i in range(200)]
    judge = tmp_path / "recorded"
    judge.mkdir()
    for fname, answer in (("a.json", 0.0), ("b.json", 1.0)):
        rows = [{"instruction": p.instruction, "output_1": p.output_1, "output_2": p.output_2, "p_output_2": answer}
                for p in pairs]
        (judge / fname).write_text(json.dumps(rows))
    (judge / "config.yaml").write_text("backend: replay\nfiles: [a.json]\n")
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "config.yaml").write_text("members:\n  - {judge: ../recorded}\n"
                                      "  - {judge: ../recorded, overrides: {files: [b.json]}}\n")
    anns = load_annotator(str(pool)).annotate(pairs)
    assert {a.meta["member"]: a.preference for a in anns} == {0: 0.0, 1: 1.0}
    (pool / "config.yaml").write_text("draw: alpacafarm\nmembers:\n  - {judge: ../recorded, weight: 2}\n"
                                      "  - {judge: ../recorded}\n")
    with pytest.raises(FarmError, match="equal weights"):
        load_annotator(str(pool))
