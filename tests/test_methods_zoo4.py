"""Method zoo III (issue #21): GRPO and its fixes, noise-robust DPO (robust, cDPO), KTO. Hand-worked losses,
gradient accumulation 1×8 = 8×1, and tiny-model runs whose reward (or implicit reward) rises under their own
signal. The 2-process check of KTO's step-level reference point is in tests/test_methods_zoo4_dist.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from farm.methods import dpo, grpo, kto, maths
from farm.methods.loop import TrainConfig, rl_train_config
from farm.methods.scorers import FunctionScorer
from farm.models.generation import format_prompt
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"]
RECORDS = [{"instruction": f"Sort: {a} {b}", "input": ""} for a in "123" for b in "789"]


def digit_fraction(instruction: str, input: str, output: str) -> float:
    return sum(ch.isdigit() for ch in output) / max(len(output), 1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny(TEXTS, tmp_path_factory.mktemp("zoo4") / "tiny",
                      TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ----- GRPO: hand-worked numbers -----


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 3.0, 3.0, 3.0])
    # group 1: mean 3, deviations −2, −1, 3; std (Bessel) = √((4 + 1 + 9) / 2) = √7
    assert grpo.group_advantages(r, 3, "none").tolist() == pytest.approx([-2, -1, 3, 0, 0, 0])
    assert grpo.group_advantages(r, 3, "group").tolist() == pytest.approx(
        [-2 / (7**0.5 + 1e-4), -1 / (7**0.5 + 1e-4), 3 / (7**0.5 + 1e-4), 0, 0, 0])
    assert grpo.group_advantages(r, 3, "batch").tolist() == pytest.approx(
        (torch.tensor([-2.0, -1, 3, 0, 0, 0]) / (r.std() + 1e-4)).tolist())
    assert grpo.informative_groups(r, 3).tolist() == [0, 1, 2]  # the all-equal group carries no signal


def test_clip_higher_and_the_sequence_ratio_by_hand():
    lp, old = torch.tensor([[0.5, -0.5]]), torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    # A = +1: ρ = e^0.5 ≈ 1.65 is clipped at 1 + ε_high; ρ = e^−0.5 ≈ 0.61 stays (min of ρA and clip(ρ)A)
    per, st = grpo.grpo_token_loss(lp, old, torch.tensor([1.0]), mask, 0.2, 0.28)
    assert per[0].tolist() == pytest.approx([-1.28, -math.exp(-0.5)])
    assert st["clipfrac_high"] == 0.5 and st["clipfrac_low"] == 0.0
    # A = −1: −min(−ρ, −clip(ρ)) = max(ρ, clip(ρ)): e^0.5 stays, e^−0.5 → 1 − ε_low = 0.8
    per, st = grpo.grpo_token_loss(lp, old, torch.tensor([-1.0]), mask, 0.2, 0.28)
    assert per[0].tolist() == pytest.approx([math.exp(0.5), 0.8]) and st["clipfrac_low"] == 0.5
    # GSPO: one ratio per response, exp(mean log ρ) = exp(0) = 1 on both tokens
    per, _ = grpo.grpo_token_loss(lp, old, torch.tensor([2.0]), mask, 0.2, 0.2, sequence_ratio=True)
    assert per[0].tolist() == pytest.approx([-2.0, -2.0])


def test_the_three_normalisations_by_hand():
    per = torch.tensor([[1.0, 1.0, 1.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # GRPO: (mean 1 + mean 4) / 2 responses; DAPO: (3 + 4) / 4 tokens; Dr. GRPO: 7 / (2 responses × 4)
    assert grpo.sequence_mean(per, mask, torch.tensor(2.0), 4).item() == pytest.approx(2.5)
    assert grpo.token_mean(per, mask, torch.tensor(4.0), 4).item() == pytest.approx(7 / 4)
    assert grpo.constant_mean(per, mask, torch.tensor(2.0), 4).item() == pytest.approx(7 / 8)
    assert set(grpo.NORMALISATIONS) == {"grpo", "dapo", "dr_grpo"}


# ----- GRPO on a tiny model -----


@pytest.mark.parametrize("loss", ["grpo", "dapo", "dr_grpo"])
def test_grpo_grad_accumulation_1x8_equals_8x1(tiny_dir, loss):
    """The same rollout (same seed), one optimiser step of SGD: one micro-batch of 8 or 8 micro-batches of 1."""
    after = []
    for micro in (8, 1):
        model, tok = load_causal_lm(str(tiny_dir), device="cpu")
        cfg = grpo.Config(steps=1, prompts_per_step=2, k=4, minibatch_size=8, micro_batch_size=micro, epochs=2,
                          loss=loss, importance="token", kl_coef=0.1, max_new_tokens=8,
                          train=rl_train_config(lr=0.5, optimizer="sgd", max_grad_norm=0.0, progress=False))
        grpo.train(model.double(), tok, RECORDS, FunctionScorer(digit_fraction), cfg)
        after.append(_params(model))
    for name in after[0]:
        torch.testing.assert_close(after[0][name], after[1][name], atol=1e-9, rtol=1e-7)


def test_grpo_reward_rises_under_its_own_signal_and_every_parameter_moves(tiny_dir):
    model, tok = load_causal_lm(str(tiny_dir), device="cpu")
    before = _params(model)
    cfg = grpo.Config(steps=30, prompts_per_step=4, k=4, minibatch_size=16, micro_batch_size=16, max_new_tokens=8,
                      kl_coef=0.01, train=rl_train_config(lr=1e-2, progress=False))
    hist = grpo.train(model, tok, RECORDS, FunctionScorer(digit_fraction), cfg)
    first = sum(h["reward"] for h in hist[:5]) / 5
    last = sum(h["reward"] for h in hist[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert not [n for n in before if torch.equal(before[n], _params(model)[n])]


def test_grpo_options_run_gspo_clip_higher_dynamic_sampling_kl_in_reward(tiny_dir):
    model, tok = load_causal_lm(str(tiny_dir), device="cpu")
    cfg = grpo.Config(steps=3, prompts_per_step=2, k=4, minibatch_size=4, micro_batch_size=2, epochs=2,
                      loss="dr_grpo", scale_rewards="none", importance="sequence", clip_high=0.28,
                      dynamic_sampling=True, kl_in_reward=True, max_new_tokens=6,
                      train=rl_train_config(lr=1e-2, progress=False))
    hist = grpo.train(model, tok, RECORDS, FunctionScorer(lambda i, x, o: float(len(o) % 2)), cfg)
    assert len(hist) == 3 and all(0 <= h["kept_frac"] <= 1 for h in hist)
    assert all(math.isfinite(h["loss"]) for h in hist if h["kept_frac"] > 0)
    for bad in ({"k": 1}, {"loss": "ppo"}, {"scale_rewards": "std"}, {"importance": "token_mean"}):
        with pytest.raises(ValueError):
            grpo.Config(**bad)


def test_grpo_run_from_files_resumes_exactly_where_it_stopped(tiny_dir, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))

    def run(out: str, steps: int) -> list[dict]:
        cfg = grpo.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl"), output_dir=str(tmp_path / out),
                          steps=steps, prompts_per_step=2, k=4, minibatch_size=8, micro_batch_size=8,
                          max_new_tokens=6, save_every=2, train=rl_train_config(lr=1e-2, progress=False))
        grpo.run(cfg, scorer=FunctionScorer(digit_fraction))
        return [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    straight = run("a", 4)
    run("b", 2)
    resumed = run("b", 4)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for key in ("reward", "kl", "loss", "entropy"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in straight], rel=1e-5, abs=1e-7), key


# ----- robust DPO and cDPO -----


def test_robust_and_cdpo_losses_by_hand_and_robust_is_unbiased_under_flips():
    t = torch.tensor
    c, r, rc, rr = t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0])  # h = 2
    beta, eps = 0.5, 0.25  # βh = 1
    lp, ln = math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(1.0))  # ℓ(1), ℓ(−1) with ℓ(z) = −log σ(z)
    assert dpo.cdpo_loss(c, r, rc, rr, beta, label_smoothing=eps).item() == pytest.approx(0.75 * lp + 0.25 * ln)
    assert dpo.robust_loss(c, r, rc, rr, beta, label_smoothing=eps).item() == pytest.approx((0.75 * lp - 0.25 * ln) / 0.5)
    # ε = 0: both are DPO
    for fn in (dpo.cdpo_loss, dpo.robust_loss):
        assert fn(c, r, rc, rr, beta).item() == pytest.approx(dpo.dpo_loss(c, r, rc, rr, beta).item())
    # unbiased: a label flipped with probability ε swaps chosen and rejected (h → −h); the expected robust loss over
    # that noise is the clean DPO loss ℓ(βh), for every h and ε; cDPO's is not
    for h_val in (-3.0, -0.4, 0.0, 1.0, 2.5):
        for e in (0.1, 0.25, 0.4):
            h = t([h_val], dtype=torch.float64)
            z = torch.zeros(1, dtype=torch.float64)
            expected = (1 - e) * dpo.robust_loss(h, z, z, z, 1.0, label_smoothing=e) + \
                e * dpo.robust_loss(-h, z, z, z, 1.0, label_smoothing=e)
            assert expected.item() == pytest.approx(-F.logsigmoid(h).item(), rel=1e-12)
    z = torch.zeros(1)
    biased = 0.75 * dpo.cdpo_loss(t([2.0]), z, z, z, 1.0, label_smoothing=0.25) + \
        0.25 * dpo.cdpo_loss(t([-2.0]), z, z, z, 1.0, label_smoothing=0.25)
    assert abs(biased.item() + F.logsigmoid(t([2.0])).item()) > 0.1
    assert {"robust", "cdpo"} <= set(dpo.LOSSES)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo.Config(loss="robust", label_smoothing=0.5)


# ----- KTO -----


def test_kto_loss_and_reference_point_by_hand():
    r, d = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([True, False, False])
    z0 = kto.reference_point(torch.tensor([0.5, 0.1]))  # mean 0.3 ≥ 0
    assert z0.item() == pytest.approx(0.3)
    out = kto.kto_loss(r, d, z0, beta=2.0, desirable_weight=1.5, undesirable_weight=0.5)

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    # desirable: 1.5 (1 − σ(β(r − z0))) = 1.5 (1 − σ(2 · 0.7)); undesirable: 0.5 (1 − σ(β(z0 − r)))
    assert out.tolist() == pytest.approx([1.5 * (1 - sig(1.4)), 0.5 * (1 - sig(4.6)), 0.5 * (1 - sig(-0.4))], rel=1e-5)
    assert kto.reference_point(torch.tensor([-0.5, -0.1])).item() == 0.0  # clamped: a KL is never negative
    with pytest.raises(ValueError, match="labels_from"):
        kto.Config(labels_from="verdicts")


def _kto_examples(n: int = 16) -> list[dict]:
    out = []
    for i in range(n):
        p = format_prompt(f"Sort: {i % 7} {i % 5}")
        out.append({"prompt": p, "completion": f"{min(i % 7, i % 5)} {max(i % 7, i % 5)}", "label": True})
        out.append({"prompt": p, "completion": f"zz {i} ab", "label": False})
    return out


def test_kto_grad_accumulation_1x8_equals_8x1_with_a_step_level_reference_point(tiny_dir):
    """8×1 takes the one-prompt-pass route (the mismatched answers scored as constants after the answers' prompt
    pass), 1×8 the separate step-level pass: the same z0 and the same update."""
    from farm.methods.data import tokenize_pairs
    from farm.methods.pairs import precompute_reference

    after, z0s = [], []
    for per_device, accum in ((8, 1), (1, 8)):
        model, tok = load_causal_lm(str(tiny_dir), device="cpu")
        model = model.double()
        ex = tokenize_pairs(tok, kto.with_mismatched(_kto_examples(4)), keys=kto.KEYS)
        ex = [{**e, "ref": [e["ref"][0] - 2.0, e["ref"][1] - 2.0]}  # a reference below the policy: z0 > 0
              for e in precompute_reference(model, tok, ex, keys=kto.KEYS)]
        cfg = kto.Config(train=TrainConfig(lr=0.5, optimizer="sgd", per_device_batch_size=per_device, grad_accum=accum,
                                           max_steps=2, max_grad_norm=0.0, progress=False))
        res = kto.train(model, tok, ex, cfg)
        after.append(_params(model))
        z0s.append([h["z0"] for h in res["history"]])
    assert z0s[0][0] == pytest.approx(2.0, abs=1e-9) and z0s[0][1] > 0
    assert z0s[0] == pytest.approx(z0s[1], abs=1e-9)
    for name in after[0]:
        torch.testing.assert_close(after[0][name], after[1][name], atol=1e-9, rtol=1e-7)


def test_kto_mismatched_partners_never_share_the_answers_prompt_when_another_exists():
    ex = kto.with_mismatched(_kto_examples(6))  # (desirable, undesirable) of one prompt, prompt after prompt
    by_answer = {e["completion"]: e["prompt"] for e in ex}
    assert all(by_answer[e["kl_completion"]] != e["prompt"] for e in ex)


def test_kto_run_labels_pairs_and_the_implicit_reward_moves_the_right_way(tiny_dir, tmp_path):
    rows = [{"instruction": f"Sort: {i % 7} {i % 5}", "input": "", "output_1": f"zz {i} ab",
             "output_2": f"{i % 5} {i % 7}", "p_output_2": 1.0 if i % 3 else 0.9} for i in range(24)]
    rows.append({**rows[0], "p_output_2": 0.5})  # a tie: dropped
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = _params(load_causal_lm(str(tiny_dir), device="cpu")[0])
    cfg = kto.Config(policy=str(tiny_dir), preferences=str(tmp_path / "prefs.jsonl"), output_dir=str(tmp_path / "o"),
                     train=TrainConfig(lr=3e-3, schedule="constant", warmup_ratio=0.0, per_device_batch_size=12,
                                       epochs=4, progress=False))
    res = kto.run(cfg)
    assert res["answers"] == 48 and res["desirable"] == 24
    hist = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert hist[0]["signed_reward"] == pytest.approx(0.0, abs=1e-6)  # first step: policy = reference
    assert hist[0]["loss"] == pytest.approx(0.5, abs=1e-6)  # 1 − σ(0) for every answer
    assert hist[-1]["signed_reward"] > 0.05 and hist[-1]["loss"] < hist[0]["loss"]
    after = _params(load_causal_lm(res["model_dir"], device="cpu")[0])
    assert not [n for n in before if torch.equal(before[n], after[n])]


def test_kto_labels_from_an_absolute_score_split_at_the_median(tmp_path):
    rows = [{"instruction": "Sort: 1 2", "input": "", "chosen": c, "rejected": r}
            for c, r in (("1 2", "x"), ("1 2 3", "xy"), ("12", "x y z"))]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from farm.config import from_dict

    cfg = from_dict(kto.Config, {"preferences": str(tmp_path / "p.jsonl"), "labels_from": "score",
                                 "scorer": {"function": "tests.test_methods_zoo4:digit_fraction"}})
    answers = kto.labelled_answers(cfg)
    assert len(answers) == 6 and sum(a["label"] for a in answers) == 3  # digits-rich half is desirable
    assert all(a["label"] == (a["score"] >= 0.5) for a in answers)
    with pytest.raises(Exception, match="absolute score"):
        kto.labelled_answers(from_dict(kto.Config, {"preferences": str(tmp_path / "p.jsonl"), "labels_from": "score"}))


def test_kto_records_with_labels_and_a_bad_label_is_refused(tmp_path):
    from farm.errors import FarmError

    (tmp_path / "l.jsonl").write_text(json.dumps({"instruction": "i", "completion": "a", "label": True}) + "\n" +
                                      json.dumps({"instruction": "i", "output": "b", "label": "yes"}) + "\n")
    with pytest.raises(FarmError, match="label must be") as e:
        kto.labelled_answers(kto.Config(preferences=str(tmp_path / "l.jsonl"), labels_from="label"))
    assert e.value.line == 2


def test_masked_sum_used_by_gspo_is_the_plain_sum_on_real_tokens():
    x, m = torch.tensor([[1.0, 2.0, 5.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert maths.masked_sum(x, m, -1).tolist() == [3.0]


# ----- the command line and `farm compare` -----


@pytest.mark.parametrize("method", ["grpo", "kto"])
def test_shipped_train_configs_load_and_open_with_their_command(method):
    from pathlib import Path

    from farm.config import load_config
    from farm.methods import load_method

    path = Path(__file__).parent.parent / "configs" / f"train_{method}.yaml"
    assert path.read_text().splitlines()[0].startswith(f"# farm train {method} --config configs/{path.name}")
    cfg = load_config(load_method(method).Config, path)
    assert cfg.output_dir == f"runs/{method}"


def test_grpo_and_kto_are_rows_of_farm_compare(tmp_path):
    from pathlib import Path

    import pandas as pd

    from farm.run import compare

    smoke = Path(__file__).parent.parent / "configs" / "smoke.yaml"
    run = compare(smoke, [f"run_dir={tmp_path / 'run'}", "progress=false", "methods=[sft,grpo,kto]",
                          "extra_methods={grpo: {steps: 2, prompts_per_step: 4, k: 4, minibatch_size: 16, "
                          "micro_batch_size: 16}, kto: {train: {epochs: 1.0}}}", "n_boot=50"], log=lambda s: None)
    lb = pd.read_csv(run.dir / "leaderboard.csv", index_col=0)
    assert set(lb.index) == {"sft", "grpo", "kto"}
    stages = json.loads((run.dir / "stages.json").read_text())
    assert stages["method:grpo"]["steps"] == 2 and stages["method:kto"]["answers"] > 0


def test_the_zoo3_compare_config_loads_and_names_known_methods():
    from pathlib import Path

    from farm.config import from_dict, load_config
    from farm.methods import METHODS, load_method
    from farm.run import CompareConfig

    cfg = load_config(CompareConfig, Path(__file__).parent.parent / "configs" / "zoo3.yaml")
    for name in cfg.methods:
        extra = cfg.extra_methods.get(name, {})
        method = extra.get("method", name)
        assert method in METHODS or name == "sft"
        if name != "sft":  # every variant's settings are valid keys of its method's Config
            from_dict(load_method(method).Config, {k: v for k, v in extra.items() if k != "method"})
