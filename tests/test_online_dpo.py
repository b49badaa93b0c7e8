"""Online DPO with a judge in the loop: worst-of-k knockout, pairs the judge prefers, learning, round resume."""

import json

import pytest
import torch

from farm.methods import online_dpo
from farm.methods.loop import TrainConfig
from farm.methods.scorers import knockout
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny
from farm.types import Annotation

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"]
RECORDS = [{"instruction": f"Sort: {a} {b}", "input": ""} for a in "123" for b in "789"]


def digits(o: str) -> float:
    return sum(ch.isdigit() for ch in o) / max(len(o), 1)


class DigitJudge:
    """A rule judge (a real Annotator): the output with the larger share of digit characters wins."""

    def identity(self):
        return "digit-judge"

    def annotate(self, pairs, seed=0):
        return [Annotation(p, 0.5 if digits(p.output_1) == digits(p.output_2)
                           else float(digits(p.output_2) > digits(p.output_1)), "digits") for p in pairs]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny(TEXTS, tmp_path_factory.mktemp("online_dpo") / "tiny",
                      TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)


def test_knockout_for_the_worst_finds_the_shortest_and_rejects_a_bad_pick():
    class PreferLonger:
        def identity(self):
            return "longer"

        def annotate(self, pairs, seed=0):
            return [Annotation(p, float(len(p.output_2) > len(p.output_1)), "longer") for p in pairs]

    cands = [["aa", "a", "aaaaa", "aaa", "aaaa"], ["xx", "xxx", "x"], ["b", "bb"]]
    recs = [{"instruction": "i"}] * 3
    for seed in range(5):
        assert knockout(PreferLonger(), recs, cands, seed=seed, pick="worst") == [1, 2, 0]
        assert knockout(PreferLonger(), recs, cands, seed=seed) == [2, 1, 1]
    with pytest.raises(ValueError, match="pick"):
        knockout(PreferLonger(), recs, cands, pick="median")


def _cfg(tmp_path, rounds: int, **kw) -> online_dpo.Config:
    return online_dpo.Config(policy=kw.pop("policy"), prompts=str(tmp_path / "prompts.jsonl"), judge="digits",
                             output_dir=str(kw.pop("out", tmp_path / "out")), rounds=rounds, prompts_per_round=kw.pop("prompts_per_round", 9),
                             k=4, temperature=1.0, max_new_tokens=8,
                             train=TrainConfig(lr=kw.pop("lr", 5e-3), epochs=1.0, schedule="constant",
                                               warmup_ratio=0.0, per_device_batch_size=8, progress=False,
                                               device="cpu"), **kw)


def test_pairs_are_the_judges_best_and_worst_and_the_policy_learns_what_it_likes(tiny_dir, tmp_path):
    model, tok = load_causal_lm(str(tiny_dir), device="cpu")
    cfg = _cfg(tmp_path, 12, policy=str(tiny_dir), lr=1e-2, prompts_per_round=0)  # every prompt every round
    records = RECORDS * 4
    examples, stats = online_dpo.round_pairs(model, tok, records, DigitJudge(), cfg, 0)
    assert stats["pairs"] + stats["dropped_equal"] == len(records)
    assert all(digits(e["chosen"]) >= digits(e["rejected"]) for e in examples)
    assert any(digits(e["chosen"]) > digits(e["rejected"]) for e in examples)
    before = [digits(e["chosen"]) + digits(e["rejected"]) for e in examples]
    online_dpo.train(model, tok, records, DigitJudge(), cfg)
    after, _ = online_dpo.round_pairs(model, tok, records, DigitJudge(), cfg, 99)
    got = [digits(e["chosen"]) + digits(e["rejected"]) for e in after]
    assert sum(got) / max(len(got), 1) > sum(before) / len(before) + 0.1


def test_run_resumes_at_the_last_finished_round_with_the_same_weights(tiny_dir, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    straight = online_dpo.run(_cfg(tmp_path, 2, policy=str(tiny_dir), out=tmp_path / "a"), annotator=DigitJudge())
    online_dpo.run(_cfg(tmp_path, 1, policy=str(tiny_dir), out=tmp_path / "b"), annotator=DigitJudge())
    (tmp_path / "b" / "round_0" / "pairs.jsonl").unlink()  # a finished round is not re-sampled nor re-judged
    resumed = online_dpo.run(_cfg(tmp_path, 2, policy=str(tiny_dir), out=tmp_path / "b"), annotator=DigitJudge())
    assert straight["rounds"] == resumed["rounds"] == 2 and straight["pairs"] == resumed["pairs"] > 0
    again = online_dpo.run(_cfg(tmp_path, 2, policy=str(tiny_dir), out=tmp_path / "b"), annotator=DigitJudge())
    a = load_causal_lm(straight["model_dir"], device="cpu")[0].state_dict()
    b = load_causal_lm(resumed["model_dir"], device="cpu")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    c = load_causal_lm(again["model_dir"], device="cpu")[0].state_dict()  # all rounds done: the last round's policy
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1] and all("loss" in r for r in rows)
    from farm.errors import FarmError

    with pytest.raises(FarmError, match="judge"):
        online_dpo.run(online_dpo.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl")))
    with pytest.raises(ValueError, match="k must"):
        online_dpo.Config(k=1)
