"""Pools (member draws, swaps, noise, nesting), replay of recorded verdicts, and loading rules."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from farm.annotators import annotate_pairs, load_annotator
from farm.annotators.noise import ConstantJudge
from farm.annotators.pool import Pool, RandomSwap
from farm.errors import FarmError
from farm.types import Annotation, Pair


def make_pairs(n: int) -> list[Pair]:
    return [Pair(f"instruction {i}", f"first {i}", f"second output {i}", id=str(i)) for i in range(n)]


class SeesOrder:
    """A judge that always prefers whatever it is shown first, and records what it saw."""

    def __init__(self, name: str = "first"):
        self.name, self.seen = name, []

    def identity(self) -> str:
        return f"sees_order({self.name})"

    def annotate(self, pairs, seed: int = 0):
        self.seen.extend(pairs)
        return [Annotation(pair=p, preference=0.0, annotator=self.name) for p in pairs]


def test_pool_member_draw_depends_on_seed_and_whole_pair_only():
    pool = Pool("p", [ConstantJudge(0.0, "m0"), ConstantJudge(0.5, "m1"), ConstantJudge(1.0, "m2")], [1, 2, 1])
    pairs = make_pairs(400)
    a = pool.annotate(pairs, seed=7)
    # same seed, other order and batching → same member per pair
    b = list(reversed(pool.annotate(list(reversed(pairs)), seed=7)))
    c = pool.annotate(pairs[:150], seed=7) + pool.annotate(pairs[150:], seed=7)
    assert [x.annotator for x in a] == [x.annotator for x in b] == [x.annotator for x in c]
    assert [x.preference for x in a] == [{"m0": 0.0, "m1": 0.5, "m2": 1.0}[x.annotator] for x in a]
    # another seed → other draws; weights are respected (m1 has half the mass)
    assert [x.annotator for x in pool.annotate(pairs, seed=8)] != [x.annotator for x in a]
    counts = Counter(x.annotator for x in a)
    assert 0.42 < counts["m1"] / 400 < 0.58 and counts["m0"] > 60 and counts["m2"] > 60
    # the draw depends on the outputs, not only the instruction
    twin = [Pair(p.instruction, p.output_1 + "!", p.output_2) for p in pairs]
    assert [x.annotator for x in pool.annotate(twin, seed=7)] != [x.annotator for x in a]


def test_random_swap_shows_both_orders_and_undoes_them():
    inner = SeesOrder()
    pairs = make_pairs(200)
    anns = RandomSwap(inner, salt="s").annotate(pairs, seed=1)
    swapped = [a.meta["swapped"] for a in anns]
    assert 70 < sum(swapped) < 130
    for pair, shown, ann, s in zip(pairs, inner.seen, anns, swapped):
        assert shown.output_1 == (pair.output_2 if s else pair.output_1)
        assert shown.meta.get("swapped", False) == s
        assert ann.pair == pair
        # "prefers the first shown" becomes "prefers output_2" exactly when swapped
        assert ann.preference == (1.0 if s else 0.0)
    assert [a.meta["swapped"] for a in RandomSwap(SeesOrder(), "s").annotate(pairs, seed=1)] == swapped


def test_position_bias_in_a_pool_turns_into_noise():
    # a member that always picks the first output shown: with random swaps its verdicts split ~50/50
    pool = Pool("p", [RandomSwap(SeesOrder(), "p")], [1.0])
    prefs = [a.preference for a in pool.annotate(make_pairs(300), seed=0)]
    assert 0.4 < sum(prefs) / len(prefs) < 0.6


def test_pool_folder_with_noise_and_weights(tmp_path):
    for name, answer in (("judge_a", 0.0), ("judge_b", 1.0)):
        d = tmp_path / name
        d.mkdir()
        rows = [{"instruction": p.instruction, "output_1": p.output_1, "output_2": p.output_2,
                 "p_output_2": answer} for p in make_pairs(300)]
        (d / "verdicts.json").write_text(json.dumps(rows))
        (d / "config.yaml").write_text("backend: replay\nfiles: [verdicts.json]\n")
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    (pool_dir / "config.yaml").write_text(
        "members:\n  - {judge: ../judge_a, weight: 3}\n  - {judge: ../judge_b, weight: 1}\n")
    pairs = make_pairs(300)
    anns = annotate_pairs(pairs, load_annotator(str(pool_dir)), progress=False)
    share_b = sum(a.annotator == "judge_b" for a in anns) / len(anns)
    assert 0.17 < share_b < 0.33
    assert all(a.preference == (1.0 if a.annotator == "judge_b" else 0.0) for a in anns)
    # replay members are not swapped (recorded order), and a 100% flip on the pool flips every verdict
    (pool_dir / "config.yaml").write_text("members:\n  - {judge: ../judge_a}\nnoise: {flip: 1.0}\n")
    flipped = annotate_pairs(pairs, load_annotator(str(pool_dir)), progress=False)
    assert all(a.preference == 1.0 for a in flipped)
    # member noise and nesting: a pool of the pool
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "config.yaml").write_text("members:\n  - {judge: ../pool, noise: {flip: 1.0}}\n")
    assert all(a.preference == 0.0 for a in annotate_pairs(pairs[:20], load_annotator(str(outer)),
                                                              progress=False))


def test_pool_config_errors(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "config.yaml").write_text("members:\n  - {judge: gpt4o_mini_basic, wieght: 2}\n")
    with pytest.raises(FarmError, match="wieght"):
        load_annotator(str(d))
    (d / "config.yaml").write_text("members:\n  - {judge: ../bad}\n")
    with pytest.raises(FarmError, match="nest too deep"):
        load_annotator(str(d))
    (d / "config.yaml").write_text("members:\n  - {judge: no_such_judge}\n")
    with pytest.raises(FarmError, match="no judge or pool named 'no_such_judge'"):
        load_annotator(str(d))


def test_shipped_pools_mix_members(monkeypatch, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_llm_server import FakeLLMServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000")
    pairs = [Pair(f"q{i}", "a" * (1 + 2 * (i % 3)), "b" * (2 + 2 * (i % 4))) for i in range(60)]
    with FakeLLMServer() as s:
        pool = load_annotator("pool_api_mix", base_url=s.openai_base_url, backoff_base=0.01)
        anns = annotate_pairs(pairs, pool, seed=0, cache_path=tmp_path / "c.sqlite", progress=False)
        assert len({a.annotator for a in anns}) == 5  # every prompt variant was used
        assert all(a.preference == float(len(a.pair.output_2) > len(a.pair.output_1)) for a in anns)
        n = len(s.requests)
        again = annotate_pairs(pairs, pool, seed=0, cache_path=tmp_path / "c.sqlite", progress=False)
        assert len(s.requests) == n and [a.annotator for a in again] == [a.annotator for a in anns]
        noisy = annotate_pairs(pairs, load_annotator("pool_api_noisy", base_url=s.openai_base_url), seed=0,
                               cache_path=tmp_path / "c.sqlite", progress=False)
        flipped = sum(a.preference is not None and round(a.preference) != float(
            len(a.pair.output_2) > len(a.pair.output_1)) for a in noisy)
        assert 5 <= flipped <= 30  # 25% flips (+ the logprob member's soft answers and position bias)


# ----- replay -----

def test_replay_by_content_either_order_and_unknown_pairs(tmp_path):
    pairs = make_pairs(4)
    rows = [{"instruction": pairs[0].instruction, "output_1": pairs[0].output_1, "output_2": pairs[0].output_2,
             "preference": 2, "raw_completion": "Output (b)"},
            {"instruction": pairs[1].instruction, "output_1": pairs[1].output_2, "output_2": pairs[1].output_1,
             "preference": 1.75},  # recorded in the other order
            {"instruction": pairs[2].instruction, "output_1": pairs[2].output_1, "output_2": pairs[2].output_2,
             "preference": "garbage"}]
    d = tmp_path / "rec"
    d.mkdir()
    (d / "annotations.json").write_text(json.dumps(rows))
    (d / "config.yaml").write_text("backend: replay\nfiles: ['*.json']\nrandomize_order: false\n")
    anns = annotate_pairs(pairs, load_annotator(str(d)), progress=False)
    assert [a.preference for a in anns] == [1.0, 0.25, None, None]
    assert anns[0].raw == "2: Output (b)" and anns[2].raw == "garbage"
    assert anns[3].meta["replay"].startswith("no recorded verdict")


def test_replay_pandalm_gpt35_on_real_data(shared_data):
    from farm.io import read_pandalm_humans

    rows = read_pandalm_humans(shared_data / "pandalm" / "testset-v1.json")
    pairs = [Pair(r["instruction"], r["output_1"], r["output_2"], input=r["input"], id=str(r["idx"]))
             for r in rows]
    anns = annotate_pairs(pairs, load_annotator("pandalm_gpt35_replay"), progress=False)
    recorded = json.loads((shared_data / "pandalm" / "gpt-3.5-turbo-testset-v1.json").read_text())
    counts = Counter(str(r["gpt_result"]) for r in recorded)
    prefs = Counter(a.preference for a in anns)
    assert prefs[0.0] == counts["1"] and prefs[1.0] == counts["2"] and prefs[0.5] == counts["Tie"]
    assert prefs[None] == counts["garbage"] == 25
    # the published agreement of GPT-3.5 with the human majority on this set: 69.8% (ties count as a class)
    agree = 0
    for r, a in zip(rows, anns):
        majority = Counter(r["human"]).most_common(1)[0][0]
        agree += a.preference == majority
    assert agree / len(rows) == pytest.approx(0.698, abs=0.005)


def test_replay_alpaca_eval_gpt4_by_content(shared_data):
    import gzip

    path = shared_data / "alpaca_eval" / "annotations_alpaca_eval_gpt4" / "alpaca-7b.json.gz"
    rows = json.loads(gzip.open(path).read())[:50]
    pairs = [Pair(r["instruction"], r["output_1"], r["output_2"]) for r in rows]
    j = load_annotator("alpaca_eval_gpt4_replay")
    anns = annotate_pairs(pairs + [Pair("never seen", "x", "y")], j, progress=False)
    from farm.types import from_alpaca_eval

    assert [a.preference for a in anns[:50]] == [from_alpaca_eval(r["preference"]) for r in rows]
    assert anns[-1].preference is None


def test_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path):
    from farm.annotators import VerdictCache

    bad = tmp_path / "notes.txt"
    bad.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(FarmError, match="cannot use this file as the verdict cache"):
        annotate_pairs(make_pairs(2), ConstantJudge(0.5), cache_path=bad, progress=False)
    assert bad.read_text().startswith("these are my notes")  # left untouched
    with VerdictCache(tmp_path / "ok.sqlite") as cache:  # and a real one round-trips a verdict
        from farm.annotators import Verdict

        cache.put("j", "k", Verdict(0.25, "raw", 3, 1, 0.5, 0.1, {"x": 1}), swapped=True)
        assert cache.get_many("j", ["k", "missing"]) == {"k": Verdict(0.25, "raw", 3, 1, 0.5, 0.1, {"x": 1})}
        assert cache.count("j") == 1 and cache.count("other") == 0
