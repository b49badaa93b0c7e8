"""Annotator-derived rewards for RL (scorers.JudgeScorer, `reward.judge` in PPO/RLOO) and DPO's NLL term (RPO)."""

import json
import math

import pytest
import torch

from farm.annotators import load_annotator
from farm.methods import dpo, pairs, ppo, rloo
from farm.methods.data import collate_pairs
from farm.methods.loop import rl_train_config
from farm.methods.scorers import JudgeScorer, RewardSpec
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"]
RECORDS = [{"instruction": f"Sort: {a} {b}", "input": ""} for a in "123" for b in "789"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny(TEXTS, tmp_path_factory.mktemp("judge_reward") / "tiny",
                      TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)


def test_judge_scorer_undoes_the_shown_order_asks_each_reference_once_and_penalises_length(tmp_path):
    asked = []

    def reference(records):
        asked.extend(r["instruction"] for r in records)
        return ["a b"] * len(records)

    records = [{"instruction": f"q{i}", "input": ""} for i in range(40)]
    responses = ["a b c d" if i % 3 == 0 else "a" if i % 3 == 1 else "a b" for i in range(40)]
    want = [1.0 if i % 3 == 0 else 0.0 if i % 3 == 1 else 0.5 for i in range(40)]
    scorer = JudgeScorer(load_annotator("longest"), reference, seed=3, cache_path=tmp_path / "c.sqlite")
    assert scorer.score(records, responses) == want  # the longer answer wins in whichever order it was shown
    assert scorer.score(records, responses[::-1])[::-1] == want
    assert sorted(asked) == sorted(r["instruction"] for r in records)  # one reference per prompt, then cached
    assert scorer.n_requests == 80 and scorer.n_invalid == 0
    penalised = JudgeScorer(load_annotator("longest"), reference, length_penalty=0.5, seed=3)
    got = penalised.score(records[:3], responses[:3])
    assert got == pytest.approx([1.0 - 0.5 * 4 / 10, 0.0 + 0.5 * 2 / 10, 0.5])


def test_judge_scorer_reads_a_soft_judge_as_a_probability_and_an_invalid_verdict_as_a_tie():
    class Fixed:  # an Annotator whose verdict is P(output_2 better) = 0.8, or invalid for the instruction "bad"
        def identity(self):
            return "fixed-0.8"

        def annotate(self, pairs, seed=0):
            from farm.types import Annotation

            return [Annotation(p, None if p.instruction == "bad" else 0.8, "fixed") for p in pairs]

    scorer = JudgeScorer(Fixed(), lambda recs: ["ref"] * len(recs), seed=0)
    recs = [{"instruction": f"q{i}"} for i in range(30)] + [{"instruction": "bad"}]
    got = scorer.score(recs, ["x"] * 31)
    assert set(round(g, 6) for g in got[:30]) == {0.8, 0.2}  # 0.8 when shown second, 1 - 0.8 when shown first
    assert 0 < sum(g == pytest.approx(0.8) for g in got[:30]) < 30
    assert got[30] == 0.5 and scorer.n_invalid == 1


def test_judge_scorer_both_orders_cancels_a_position_bias_and_counts_two_requests():
    class FirstWins:  # a judge that always prefers whichever output it is shown first (pure position bias)
        def identity(self):
            return "first-wins"

        def annotate(self, pairs, seed=0):
            from farm.types import Annotation

            return [Annotation(p, 0.0, "first") for p in pairs]

    recs = [{"instruction": f"q{i}"} for i in range(30)]
    one = JudgeScorer(FirstWins(), lambda rs: ["ref"] * len(rs), seed=0)
    got = one.score(recs, ["x"] * 30)
    assert set(got) == {0.0, 1.0}  # one random order each: the bias decides every reward
    both = JudgeScorer(FirstWins(), lambda rs: ["ref"] * len(rs), seed=0, both_orders=True, length_penalty=0.1)
    assert both.score(recs, ["xxxx"] * 30) == pytest.approx([0.5 - 0.1 * 1 / 10] * 30)  # bias cancelled, penalty kept
    assert one.n_requests == 30 and both.n_requests == 60


def test_judge_scorer_fresh_reference_is_asked_every_batch_with_the_batch_seed(tmp_path):
    calls = []

    def reference(records, seed=None):
        calls.append((len(records), seed))
        return ["a b"] * len(records)

    recs = [{"instruction": f"q{i}"} for i in range(6)]
    fresh = JudgeScorer(load_annotator("longest"), reference, seed=1, fresh_reference=True)
    fresh.score(recs, ["a"] * 6)
    fresh.score(recs, ["a"] * 6)
    fresh.score(recs, ["a b c"] * 6)
    assert [n for n, _ in calls] == [6, 6, 6]  # not cached per prompt
    assert calls[0][1] == calls[1][1] != calls[2][1]  # the seed follows the batch's content (resume-safe)
    cached = JudgeScorer(load_annotator("longest"), lambda rs: reference(rs), seed=1)
    cached.score(recs, ["a"] * 6)
    cached.score(recs, ["a b c"] * 6)
    assert len(calls) == 4  # the default asks once per prompt


def test_ppo_sample_reference_is_a_sample_of_the_reference_policy_and_a_bad_value_is_refused(tiny_dir, tmp_path):
    from farm.errors import FarmError
    from farm.methods.scorers import reward_scorer

    model, tok = load_causal_lm(str(tiny_dir))
    recs = [{"instruction": "Sort: 1 7", "input": ""}] * 8
    cfg = ppo.Config(reward=RewardSpec(judge="longest", judge_reference="sample"), temperature=1.0, max_new_tokens=6,
                     output_dir=str(tmp_path / "a"))
    sc = reward_scorer(cfg, "ppo", model, tok)
    refs = sc.reference(recs, 123)
    assert len(set(refs)) > 1  # sampled: the same prompt gets different references
    assert sc.reference(recs, 123) == refs  # and the same seed gives the same ones
    greedy = reward_scorer(ppo.Config(reward=RewardSpec(judge="longest"), max_new_tokens=6,
                                      output_dir=str(tmp_path / "b")),
                           "ppo", model, tok)
    assert len(set(greedy.reference(recs))) == 1
    with pytest.raises(FarmError, match="judge_reference"):
        reward_scorer(ppo.Config(reward=RewardSpec(judge="longest", judge_reference="best"),
                                 output_dir=str(tmp_path / "c")),
                      "ppo", model, tok)


class DigitJudge:
    """A rule judge (an Annotator): the output with the larger share of digit characters wins."""

    def identity(self):
        return "digit-judge"

    def annotate(self, pairs, seed=0):
        from farm.types import Annotation

        def frac(o):
            return sum(ch.isdigit() for ch in o) / max(len(o), 1)

        return [Annotation(p, 0.5 if frac(p.output_1) == frac(p.output_2) else float(frac(p.output_2) > frac(p.output_1)),
                           "digits") for p in pairs]


def test_rloo_with_a_judge_reward_learns_what_the_judge_likes(tiny_dir):
    model, tok = load_causal_lm(str(tiny_dir), device="cpu")
    ref = load_causal_lm(str(tiny_dir), device="cpu", tokenizer=tok)[0]
    cfg = rloo.Config(steps=30, prompts_per_step=4, k=4, max_new_tokens=8, kl_coef=0.01,
                      train=rl_train_config(lr=1e-2, progress=False))
    scorer = JudgeScorer(DigitJudge(), lambda recs: ["a b c 1"] * len(recs), seed=0)
    hist = rloo.train(model, tok, RECORDS, scorer, cfg, ref_policy=ref)
    first = sum(h["reward"] for h in hist[:5]) / 5
    last = sum(h["reward"] for h in hist[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert scorer.n_requests == 30 * 16


@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_rl_run_from_files_with_reward_judge_caches_its_verdicts(method, tiny_dir, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    module = {"ppo": ppo, "rloo": rloo}[method]
    shape = ({"rollout_batch_size": 8, "minibatch_size": 4, "micro_batch_size": 4} if method == "ppo" else
             {"prompts_per_step": 2, "k": 4, "minibatch_size": 8, "micro_batch_size": 8})
    cfg = module.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl"),
                        reward=RewardSpec(judge="longest", judge_length_penalty=0.1), output_dir=str(tmp_path / "out"),
                        steps=3, max_new_tokens=6, train=rl_train_config(lr=1e-3, progress=False), **shape)
    res = module.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert res["steps"] == 3 and len(rows) == 3 and all(math.isfinite(r["reward"]) for r in rows)
    assert (tmp_path / "out" / "judge_cache.sqlite").stat().st_size > 0
    from farm.errors import FarmError

    with pytest.raises(FarmError, match="reward.judge"):
        module.run(module.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl"),
                                 output_dir=str(tmp_path / "none"), train=rl_train_config(progress=False)))


def test_dpo_nll_weight_adds_the_per_token_nll_of_the_chosen_response(tiny_dir):
    model, tok = load_causal_lm(str(tiny_dir), device="cpu")
    ex = [{"prompt": f"### Instruction:\nSort: {a} 7\n\n### Response:\n", "chosen": f"{a} 7", "rejected": f"7 {a} 0"}
          for a in "123456"]
    ex = pairs.precompute_reference(model, tok, ex, dpo.LOSSES["sigmoid"])
    batch = collate_pairs(tok, ex)
    plain, _ = pairs.pair_loss_sum(model, batch, dpo.LOSSES["sigmoid"], beta=0.1)
    with_nll, _ = pairs.pair_loss_sum(model, batch, dpo.LOSSES["sigmoid"], beta=0.1, nll_weight=0.5)
    n_chosen = batch["response_mask"][:6].sum(-1).float()
    lp_chosen = torch.tensor([e["ref"][0] for e in ex])  # at init the policy IS the reference
    want = 0.5 * (-lp_chosen / n_chosen).sum()
    assert (with_nll - plain).item() == pytest.approx(want.item(), rel=1e-5)
    assert plain.item() / 6 == pytest.approx(math.log(2), abs=1e-5)


def test_rloo_with_a_judge_reward_resumes_exactly_where_it_stopped(tiny_dir, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))

    def run(out: str, steps: int) -> tuple[list[dict], dict]:
        cfg = rloo.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl"), output_dir=str(tmp_path / out),
                          reward=RewardSpec(judge="digits"), steps=steps, prompts_per_step=2, k=4, minibatch_size=8,
                          micro_batch_size=8, max_new_tokens=6, save_every=2,
                          train=rl_train_config(lr=1e-2, progress=False))
        res = rloo.run(cfg, annotator=DigitJudge())
        return [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()], res

    straight, _ = run("a", 4)
    run("b", 2)  # "killed" after step 2 ...
    resumed, res = run("b", 4)  # ... and re-run with the same command
    assert res["judge_requests"] == 2 * 8  # only steps 3 and 4 asked the judge
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for key in ("reward", "kl", "loss", "entropy"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in straight], rel=1e-5, abs=1e-7), key
    a = load_causal_lm(str(tmp_path / "a" / "model"), device="cpu")[0].state_dict()
    b = load_causal_lm(str(tmp_path / "b" / "model"), device="cpu")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
