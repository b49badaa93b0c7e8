"""Safe RLHF (cost model, Lagrangian PPO), the harm world, and the inference-time methods (rewrite, correct,
critique_revise): hand-worked losses, and tiny-model runs whose parameters all move and whose outputs land."""

import json
import math

import pytest
import torch

from farm.annotators.synthetic import RuleJudge
from farm.io import read_records, write_records
from farm.methods import correct, critique_revise, ppo, rewrite, safe_ppo
from farm.methods.loop import TrainConfig, rl_train_config
from farm.methods.rollout import value_model_from_policy
from farm.methods.scorers import FunctionScorer, RewardModelScorer, RewardSpec
from farm.models.loading import load_causal_lm, load_scalar_model
from farm.models.tiny import TinySpec, build_tiny
from farm.types import Pair
from farm.worlds import harm

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"] + ["poison weapon steal"] * 3
RECORDS = [{"instruction": f"Sort: {a} {b}", "input": ""} for a in "123" for b in "789"]


def digit_fraction(instruction: str, input: str, output: str) -> float:
    return sum(ch.isdigit() for ch in output) / max(len(output), 1)


def has_seven(instruction: str, input: str, output: str) -> float:
    """A cost a tiny model can see: +1 (unsafe) when the response holds a 7, else −1."""
    return 1.0 if "7" in output else -1.0


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny(TEXTS, tmp_path_factory.mktemp("zoo3") / "tiny",
                      TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)


def params_of(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def all_changed(before: dict, model) -> list[str]:
    """Names of trainable parameters that did NOT change."""
    return [k for k, v in model.named_parameters() if v.requires_grad and torch.equal(before[k], v.detach())]


# ----- hand-worked numbers -----


def test_cost_loss_hand_values():
    t = torch.tensor
    # worse costs +1 and is unsafe (s=+1), better costs −1 and is safe (s=−1):
    # −log σ(2) − log σ(1) − log σ(1)
    want = math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(-1))
    assert safe_ppo.cost_loss(t([1.0]), t([-1.0]), t([1.0]), t([0.0])).item() == pytest.approx(want)
    # both labelled safe at cost 0: pairwise log 2 plus two sign terms log 2; summed over 2 pairs
    z = torch.zeros(2)
    assert safe_ppo.cost_loss(z, z, z, z).item() == pytest.approx(6 * math.log(2))


def test_lagrangian_advantage_and_lambda_step_hand_values():
    a_r, a_c = torch.tensor([1.0, 3.0]), torch.tensor([2.0, -1.0])
    assert safe_ppo.lagrangian_advantages(a_r, a_c, 1.0).tolist() == pytest.approx([-0.5, 2.0])  # (A_r − A_c)/2
    assert safe_ppo.lagrangian_advantages(a_r, a_c, 0.0).tolist() == pytest.approx([1.0, 3.0])
    # log λ = 0 (λ = 1), E[C] = 0.5 > d = 0: log λ += 0.1·1·0.5
    assert safe_ppo.lambda_update(0.0, 0.5, 0.0, 0.1, 100.0) == pytest.approx(0.05)
    # log λ = log 2, E[C] = −1 < d = 0: log λ −= 0.1·2·1
    assert safe_ppo.lambda_update(math.log(2), -1.0, 0.0, 0.1, 100.0) == pytest.approx(math.log(2) - 0.2)
    assert safe_ppo.lambda_update(math.log(9), 100.0, 0.0, 1.0, 10.0) == pytest.approx(math.log(10))


# ----- the harm world -----


def test_harm_world_labels_and_two_stage_annotation():
    w = harm.build(0, sft=300, preference=10, unlabeled=10, eval=20, unsafe_share=0.3, comply=1.0)
    unsafe = [r for r in w.splits["sft"] if r["unsafe"]]
    assert 0.2 < len(unsafe) / 300 < 0.4
    assert all(harm.is_harmful(r["instruction"], r["input"], r["output"]) for r in unsafe)  # comply = 1
    assert not any(harm.is_harmful(r["instruction"], r["input"], r["output"])
                   for r in w.splits["sft"] if not r["unsafe"])
    r = next(u for u in unsafe if harm.quality(u["instruction"], u["input"], u["output"]) > 0)
    refusal = harm.strip_flagged(r["output"])
    # helpfulness gold prefers compliance; harm gold prefers the refusal: the two labels disagree
    assert harm.quality(r["instruction"], r["input"], r["output"]) > harm.quality(r["instruction"], r["input"], refusal)
    pair = Pair(r["instruction"], r["output"], refusal, input=r["input"])
    rec = harm.two_stage_records([pair], w.annotator("gold"), harm.HarmJudge(noise=0.0))[0]
    assert (rec["p_output_2"], rec["p_safer_2"], rec["unsafe_1"], rec["unsafe_2"]) == (0.0, 1.0, True, False)
    noisy = harm.HarmJudge(noise=0.3).annotate([pair] * 1, seed=0) + harm.HarmJudge(noise=0.3).annotate(
        [Pair(p["instruction"], p["output"], "1", input=p["input"]) for p in unsafe[:60]], seed=0)
    flipped = sum(a.meta["unsafe_1"] is False for a in noisy)
    assert 0 < flipped < len(noisy) / 2  # some labels flipped, most kept
    base = w.baseline_outputs(w.splits["eval"])
    assert [b["instruction"] for b in base] == [e["instruction"] for e in w.splits["eval"]]
    assert not any(harm.is_harmful(b["instruction"], b["input"], b["output"]) for b in base)


def test_harm_world_writes_the_files_compare_reads(tmp_path):
    w = harm.build(1, sft=20, preference=10, unlabeled=10, eval=9)
    paths = w.write(tmp_path)
    assert set(paths) == {"sft", "preference", "unlabeled", "eval", "baseline_outputs"}
    assert len(read_records(paths["eval"])) == 9 == len(read_records(paths["baseline_outputs"]))
    assert w.annotator("gold").annotate([Pair("Add the two numbers.", "3", "2", input="1 + 1")])[0].preference == 1.0
    assert isinstance(w.annotator("harm_judge"), harm.HarmJudge)


@pytest.mark.parametrize("method", ["safe_ppo", "rewrite", "correct", "critique_revise"])
def test_shipped_configs_load_and_open_with_their_command(method):
    from pathlib import Path

    from farm.config import load_config
    from farm.methods import load_method

    path = Path(__file__).parent.parent / "configs" / f"train_{method}.yaml"
    assert path.read_text().splitlines()[0].startswith(f"# farm train {method} --config configs/{path.name}")
    assert load_config(load_method(method).Config, path).output_dir == f"runs/{method}"


# ----- safe PPO -----


def test_cost_model_learns_sign_and_every_parameter_moves(tiny_dir, tmp_path):
    recs = [{"instruction": "Sort: 1 7", "input": "", "output_1": "1 7 poison", "output_2": "1 7", "p_safer_2": 1.0,
             "unsafe_1": True, "unsafe_2": False},
            {"instruction": "Sort: 2 8", "input": "", "output_1": "2 8", "output_2": "weapon 2 8", "p_safer_2": 0.0,
             "unsafe_1": False, "unsafe_2": True},
            {"instruction": "Sort: 3 9", "input": "", "output_1": "3", "output_2": "9", "p_safer_2": 0.5}] * 4
    triples = safe_ppo.cost_triples(write_records(tmp_path / "harm.jsonl", recs))
    assert len(triples) == 8 and all(flagged_first(t) for t in triples)  # the tie is dropped; worse = flagged
    model, tok = load_scalar_model(str(tiny_dir), device="cpu")
    before = params_of(model)
    res = safe_ppo.train_cost_model(model, tok, triples, TrainConfig(lr=1e-2, max_steps=60, per_device_batch_size=8, schedule="constant",
                                                                     warmup_ratio=0.0, progress=False, device="cpu"))
    assert all_changed(before, res["model"]) == []
    c = RewardModelScorer(res["model"], tok).score([{"instruction": "Sort: 1 7"}] * 2, ["1 7 poison", "1 7"])
    assert c[0] > 0 > c[1]  # cost > 0 means unsafe


def flagged_first(t: dict) -> bool:
    return harm.flagged_count(t["chosen"]) > 0 and t["unsafe_chosen"] and not t["unsafe_rejected"]


def test_safe_ppo_moves_every_parameter_and_lambda_follows_the_cost(tiny_dir):
    policy, tok = load_causal_lm(str(tiny_dir), device="cpu")
    cfg = safe_ppo.Config(ppo=ppo.Config(output_dir="", steps=3, rollout_batch_size=8, minibatch_size=8,
                                         micro_batch_size=4, epochs=1, value_lr=1e-2, max_new_tokens=8, kl_coef=0.02,
                                         train=rl_train_config(lr=1e-2, seed=0, progress=False)),
                          lambda_lr=0.5, cost_threshold=-2.0)  # every cost (±1) is above d = −2: λ must rise every step
    rv, cv = value_model_from_policy(policy), value_model_from_policy(policy)
    before = [params_of(m) for m in (policy, rv, cv)]
    hist = safe_ppo.train(policy, tok, RECORDS, FunctionScorer(digit_fraction), FunctionScorer(has_seven), cfg,
                          reward_value=rv, cost_value=cv)
    for b, m in zip(before, (policy, rv, cv)):
        assert all_changed(b, m) == []
    lams = [h["lambda"] for h in hist] + [hist[-1]["lambda_next"]]
    assert lams[0] == pytest.approx(1.0) and all(b > a for a, b in zip(lams, lams[1:]))
    for h in hist:  # the recorded step is the formula applied to the recorded cost
        assert math.log(h["lambda_next"]) == pytest.approx(
            safe_ppo.lambda_update(math.log(h["lambda"]), h["cost"], -2.0, 0.5, 100.0))
        assert -1.0 <= h["cost"] <= 1.0 and 0.0 <= h["unsafe_frac"] <= 1.0


# ----- inference-time methods -----


def test_rewrite_pairs_rewriter_and_outputs(tiny_dir, tmp_path):
    prompts = write_records(tmp_path / "prompts.json", RECORDS)
    evals = write_records(tmp_path / "eval.json", RECORDS[:5])
    cfg = rewrite.Config(policy=str(tiny_dir), prompts=str(prompts), eval_prompts=str(evals),
                         output_dir=str(tmp_path / "rw"), n_prompts=6, n_answers=2, n_borrowed=2, max_new_tokens=8,
                         rewrite_max_new_tokens=12, min_gain=0.0, n_confirm=2,
                         train=TrainConfig(lr=1e-2, max_steps=3, per_device_batch_size=2, progress=False,
                                           device="cpu", warmup_ratio=0.0))
    res = rewrite.run(cfg, scorer=FunctionScorer(digit_fraction))
    pairs = read_records(tmp_path / "rw" / "pairs.jsonl")
    assert len(pairs) == 6 == res["n_pairs"]
    for p in pairs:  # the learned target is the best-valued candidate that won again on fresh answers, or the original
        assert p["gain"] >= 0 and (p["rewrite"] != p["instruction"]) == (p["gain"] > 0)
        assert p["gain"] == pytest.approx(max(p["values"]) - p["values"][0] if p["gain"] > 0 else 0.0)
        assert p["gain"] == 0 or p["confirmed_gain"] > 0
    outs = read_records(tmp_path / "rw" / "model_outputs.json")
    assert [o["instruction"] for o in outs] == [r["instruction"] for r in RECORDS[:5]]  # original order and text
    init, _ = load_causal_lm(str(tiny_dir), device="cpu")
    trained, _ = load_causal_lm(str(tmp_path / "rw" / "rewriter"), device="cpu")
    assert all_changed(params_of(init), trained) == []
    assert json.loads((tmp_path / "rw" / "metrics.json").read_text())["n_pairs"] == 6


def test_correct_examples_training_and_outputs(tiny_dir, tmp_path):
    trip = [{"instruction": r["instruction"], "input": "", "chosen": r["instruction"][6:], "rejected": "a b"}
            for r in RECORDS]
    ex = correct.correction_examples(trip, 1 / 3, seed=0)
    drafts = [e["prompt"].split("### Draft answer:\n")[1].split("\n\n### Improved")[0] for e in ex]
    assert len(ex) == 9 + 3 and drafts[:9] == ["a b"] * 9  # every correction pair, then 3 identity pairs
    assert all(d == e["output"] for d, e in zip(drafts[9:], ex[9:]))
    prefs = write_records(tmp_path / "prefs.jsonl", trip)
    evals = write_records(tmp_path / "eval.json", RECORDS[:4])
    cfg = correct.Config(policy=str(tiny_dir), preferences=str(prefs), eval_prompts=str(evals),
                         output_dir=str(tmp_path / "c"), max_new_tokens=8,
                         train=TrainConfig(lr=1e-2, max_steps=3, per_device_batch_size=4, progress=False,
                                           device="cpu", warmup_ratio=0.0))
    res = correct.run(cfg)
    assert res["n_examples"] == 9 + 4  # identity_share 0.5 of 9 rounds to 4
    outs = read_records(tmp_path / "c" / "model_outputs.json")
    assert [o["instruction"] for o in outs] == [r["instruction"] for r in RECORDS[:4]] and all("draft" in o for o in outs)
    init, _ = load_causal_lm(str(tiny_dir), device="cpu")
    trained, _ = load_causal_lm(str(tmp_path / "c" / "corrector"), device="cpu")
    assert all_changed(params_of(init), trained) == []


def test_critique_revise_never_accepts_a_worse_answer(tiny_dir, tmp_path):
    policy, tok = load_causal_lm(str(tiny_dir), device="cpu")
    cfg = critique_revise.Config(rounds=2, n_revisions=3, max_new_tokens=8, seed=0)
    scorer = FunctionScorer(digit_fraction)
    answers, log = critique_revise.critique_revise(policy, tok, RECORDS, critique_revise.Judge(scorer), cfg)
    first = critique_revise.critique_revise(policy, tok, RECORDS, critique_revise.Judge(scorer),
                                            critique_revise.Config(rounds=0, max_new_tokens=8, seed=0))[0]
    assert len(log) == 2 and all(0 <= row["accepted"] <= 1 for row in log)
    s0, s1 = scorer.score(RECORDS, first), scorer.score(RECORDS, answers)
    assert all(b >= a for a, b in zip(s0, s1)) and sum(s1) > sum(s0)  # gated: never worse, and some gain
    # with an annotator (the `longest` rule judge) through run(): answers only get longer; model critiques run
    evals = write_records(tmp_path / "eval.json", RECORDS[:4])
    for critique in ("judge", "model"):
        run_cfg = critique_revise.Config(policy=str(tiny_dir), eval_prompts=str(evals), device="cpu",
                                         output_dir=str(tmp_path / critique), rounds=1, n_revisions=2,
                                         max_new_tokens=8, critique=critique)
        res = critique_revise.run(run_cfg, annotator=RuleJudge("longest"))
        outs = read_records(tmp_path / critique / "model_outputs.json")
        assert len(outs) == 4 and len(res["accepted_per_round"]) == 1
        rounds = read_records(tmp_path / critique / "rounds.jsonl")
        # model critiques are the policy's own text; judge critiques are the verdict sentences
        assert len(rounds[0]["critiques"]) == 4
        if critique == "judge":
            assert set(rounds[0]["critiques"]) <= {critique_revise.verdict_critique(p) for p in (0.0, 1.0)}
    judge_outs = read_records(tmp_path / "judge" / "model_outputs.json")
    start = critique_revise.critique_revise(policy, tok, RECORDS[:4], critique_revise.Judge(scorer),
                                            critique_revise.Config(rounds=0, max_new_tokens=8, seed=0))[0]
    assert all(len(o["output"]) >= len(a) for o, a in zip(judge_outs, start))


def test_safe_ppo_run_trains_reward_and_cost_models_from_files(tiny_dir, tmp_path):
    """run(): helpfulness preferences → reward model; the same pairs labelled by the harm judge → cost model;
    then Lagrangian PPO; metrics.jsonl holds the λ trajectory and the harm report is filled."""
    pairs = [{"instruction": r["instruction"], "input": "", "output_1": r["instruction"][6:] + " poison",
              "output_2": r["instruction"][6:], "p_output_2": 0.0} for r in RECORDS]
    prefs = write_records(tmp_path / "prefs.jsonl", pairs)
    prompts = write_records(tmp_path / "prompts.json", RECORDS)
    cfg = safe_ppo.Config(policy=str(tiny_dir), prompts=str(prompts), preferences=str(prefs),
                          eval_prompts=str(prompts), output_dir=str(tmp_path / "s"), harm_noise=0.0,
                          ppo=ppo.Config(output_dir="", steps=2, rollout_batch_size=8, minibatch_size=8,
                                         micro_batch_size=8, epochs=1, max_new_tokens=6, kl_coef=0.02,
                                         train=rl_train_config(lr=1e-3, device="cpu", progress=False)),
                          unsafe_share=0.5,
                          train=TrainConfig(lr=1e-2, max_steps=4, per_device_batch_size=4, progress=False,
                                            device="cpu", warmup_ratio=0.0))
    res = safe_ppo.run(cfg)
    labels = read_records(tmp_path / "s" / "harm_preferences.jsonl")
    assert all(r["unsafe_1"] and not r["unsafe_2"] and r["p_safer_2"] == 1.0 for r in labels)
    rows = read_records(tmp_path / "s" / "metrics.jsonl")
    assert [r["lambda"] for r in rows] == pytest.approx(res["lambda_trajectory"]) and len(rows) == 2
    assert 0.0 <= res["harmless_rate"] <= 1.0 and "gold_win_rate_vs_start" not in res  # not world prompts
    for sub in ("model", "cost_model", "reward_model"):
        assert (tmp_path / "s" / sub / "config.json").exists()


def test_safe_ppo_refuses_a_judge_reward_it_would_otherwise_ignore(tmp_path):
    from farm.errors import FarmError

    cfg = safe_ppo.Config(policy="p", prompts="q", reward_model="rm", cost_model="cm", output_dir=str(tmp_path),
                          ppo=ppo.Config(output_dir="", reward=RewardSpec(judge="gpt4_like")))
    with pytest.raises(FarmError, match="judge rewards") as e:
        safe_ppo.run(cfg)
    assert e.value.field == "ppo.reward.judge"
