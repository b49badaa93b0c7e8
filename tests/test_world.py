"""The task world: determinism, splits, the frozen eval set, the gold quality per family, the generator, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from farm.errors import FarmError
from farm.io import read_records
from farm.worlds import tasks
from farm.worlds.tasks import FAMILIES, build, calibration_pairs, quality, strip_fillers

SMALL = {"sft": 300, "preference": 200, "unlabeled": 200}


@pytest.fixture(scope="module")
def world():
    return build(0, **SMALL)


def test_build_is_deterministic_and_seeded(world):
    again = build(0, **SMALL)
    assert again.splits == world.splits
    other = build(1, **SMALL)
    assert other.sft != world.sft and other.eval != world.eval


def test_eval_split_is_frozen_file_and_independent_of_other_sizes(world):
    from farm.data import EVAL_SETS

    frozen = read_records(EVAL_SETS / "tasks_eval.json")
    assert frozen == world.eval == build(0, sft=5, preference=0, unlabeled=0).eval
    assert len(frozen) == tasks.DEFAULT_SIZES["eval"]
    counts = {f: sum(r["family"] == f for r in frozen) for f in FAMILIES}
    assert set(counts.values()) == {len(frozen) // len(FAMILIES)}  # balanced over families


def test_splits_have_the_right_fields_and_do_not_share_prompts(world):
    keys = {}
    for split, recs in world.splits.items():
        assert len(recs) == {**tasks.DEFAULT_SIZES, **SMALL}[split]
        for r in recs:
            assert set(r) >= {"id", "family", "instruction", "input"}
            assert tasks.parse_instruction(r["instruction"])[0].name == r["family"]
        assert all("output" in r for r in recs) == (split == "sft")
        keys[split] = {(r["instruction"], r["input"]) for r in recs}
    assert len({(r["instruction"], r["input"]) for r in world.eval}) == len(world.eval)
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], (a, b)


def test_prompts_and_answers_are_short(world):
    for r in world.sft:
        assert len((r["instruction"] + " " + r["input"]).split()) <= 14
        assert len(r["output"].split()) <= 24


# (instruction, input, [outputs from best to worst]) checked by hand; the last is always garbage (quality 0)
LADDERS = [
    ("Sort the numbers from smallest to largest.", "42 7 19 3", ["3 7 19 42", "3 7 42 19", "42 7 19 3", "cat"]),
    ("Sort the numbers from largest to smallest.", "5 60 12", ["60 12 5", "60 5 12", "5 12 60", "hello"]),
    ("Reverse the order of the words.", "cat red tree", ["tree red cat", "tree cat red", "cat", "zzz"]),
    ("Add the two numbers.", "12 + 7", ["19", "20", "22", "owl"]),
    ("Convert the words to uppercase.", "red cat", ["RED CAT", "RED cat", "red cat", "pen leaf"]),
    ("Count the words.", "cat dog sun", ["3", "4", "6", "blue"]),
    ("Which number is the largest?", "4 17 9", ["17", "9", "4", "fox"]),
    ("Give the first word as JSON.", "red blue sun", ['{"answer": "red"}', '{"answer": "blue"}', "red", "{}"]),
    ("Repeat the words three times.", "sun", ["sun sun sun", "sun sun", "sun", "zzz"]),
    ("Write each word as a list item.", "cat dog", ["- cat\n- dog", "1. cat\n2. dog", "cat", "zzz"]),
]


@pytest.mark.parametrize("instruction,inp,ladder", LADDERS, ids=[x[0][:20] for x in LADDERS])
def test_gold_quality_ladder(instruction, inp, ladder):
    qs = [quality(instruction, inp, o) for o in ladder]
    assert qs[0] == 1.0
    assert all(a > b for a, b in zip(qs, qs[1:])), qs
    assert qs[-1] == 0.0
    assert quality(instruction, inp, "") == 0.0
    assert quality(instruction, inp, "Sure! Here is the answer:") == 0.0  # fillers alone are no answer


def test_every_family_has_a_ladder():
    assert {tasks.parse_instruction(i)[0].name for i, _, _ in LADDERS} == set(FAMILIES)


def test_fillers_and_rambling():
    i, x = "Add the two numbers.", "12 + 7"
    assert strip_fillers("Sure! Here is the answer: 19 Hope this helps!") == ("19", 3)
    assert quality(i, x, "The answer is 19.") == quality(i, x, "Sure! Here is the answer: 19") == 1.0
    assert quality(i, x, "Sure! Here is the answer: 19 Thanks!") == pytest.approx(0.96)
    assert quality(i, x, "Sure! Of course! Certainly! Here is the answer: 19 Thanks!") == pytest.approx(0.76)
    assert quality(i, x, "12 + 7 = 19") < 1.0  # right answer, extra words
    assert quality(i, x, "12 + 7 = 19") > quality(i, x, "20")


def test_every_demo_scores_and_styles_vary(world):
    qs = np.array([quality(r["instruction"], r["input"], r["output"]) for r in world.sft])
    assert 0.6 < qs.mean() < 0.9  # mixed quality: mostly good, room to improve
    assert (qs == 1.0).mean() > 0.3 and (qs < 0.5).mean() > 0.1
    assert any(r["output"].startswith("Sure!") for r in world.sft)
    assert any(r["output"] == FAMILIES[r["family"]].answer(r["input"], tasks.parse_instruction(
        r["instruction"])[1]) for r in world.sft)


def test_skill_orders_quality_and_baseline_is_fixed(world):
    rng = np.random.default_rng(0)
    prompts = world.preference[:200]
    mean_q = {s: np.mean([quality(p["instruction"], p["input"], world.sample_demo(p, rng, s)) for p in prompts])
              for s in (0.1, 0.5, 0.9)}
    assert mean_q[0.1] < mean_q[0.5] < mean_q[0.9]
    base = world.baseline_outputs(world.eval[:50])
    assert base == build(1, sft=0, preference=0, unlabeled=0).baseline_outputs(world.eval[:50])  # prompt-seeded
    assert {b["generator"] for b in base} == {"baseline"}
    assert [b["id"] for b in base] == [r["id"] for r in world.eval[:50]]


def test_unknown_instruction_and_sizes_are_user_errors():
    with pytest.raises(FarmError, match="not one of the task world"):
        quality("Write a poem.", "", "roses")
    with pytest.raises(FarmError, match="unknown split size"):
        build(0, train=5)
    with pytest.raises(FarmError, match="unknown task families"):
        build(0, families=["poetry"])


def test_families_subset_and_calibration_pairs():
    w = build(0, families=["add", "sort"], sft=40, preference=10, unlabeled=10, eval=10)
    assert {r["family"] for r in w.sft + w.eval} == {"add", "sort"}
    pairs = calibration_pairs(300, 0)
    assert pairs == calibration_pairs(300, 0) and all(p.output_1 != p.output_2 for p in pairs)


def test_write_and_cli(tmp_path, world, capsys):
    from farm.worlds.cli import main

    paths = world.write(tmp_path / "w")
    assert read_records(paths["sft"]) == world.sft
    assert len(read_records(paths["baseline_outputs"])) == len(world.eval)
    assert json.loads(paths["manifest"].read_text())["sizes"]["sft"] == SMALL["sft"]
    assert main(["generate", str(tmp_path / "g"), "--sft", "20", "--preference", "5", "--unlabeled", "5",
                 "--eval", "9"]) == 0
    assert len(read_records(tmp_path / "g" / "eval.json")) == 9
    assert main(["eval-set", "--check"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["eval-set", "--check", "--out", str(bad)]) == 1
    assert main(["show", "--n", "1"]) == 0
    assert "[sort" in capsys.readouterr().out


def test_gold_on_an_input_its_family_never_makes_is_a_clear_error():
    with pytest.raises(FarmError, match="not a 'max' task input") as e:
        tasks.quality("Which number is the largest?", "cat dog", "3")
    assert e.value.field == "input"
