"""PPO, DPO (+IPO, length-normalised) and RLOO: hand-worked losses, invariances, and tiny-model runs that learn."""

import copy
import json
import math

import pytest
import torch

from farm.methods import dpo, maths, pairs, ppo, rloo, rollout
from farm.methods.data import collate_pairs
from farm.methods.loop import TrainConfig, rl_train_config
from farm.methods.scorers import FunctionScorer, RewardSpec
from farm.models.loading import load_causal_lm, save_model
from farm.models.tiny import TinySpec, build_tiny

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"]
RECORDS = [{"instruction": f"Sort: {a} {b}", "input": ""} for a in "123" for b in "789"]


def digit_fraction(instruction: str, input: str, output: str) -> float:
    """A reward a tiny model can learn in ~30 steps: the fraction of the response's characters that are digits."""
    return sum(ch.isdigit() for ch in output) / max(len(output), 1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny(TEXTS, tmp_path_factory.mktemp("zoo2") / "tiny",
                      TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)


@pytest.fixture()
def tiny(tiny_dir):
    return load_causal_lm(str(tiny_dir), device="cpu")


# ----- losses against numbers worked out by hand -----


def test_dpo_ipo_and_length_normalised_losses_hand_values():
    t = torch.tensor
    # policy moved +1 towards chosen and -1 away from rejected: h = (−1 − (−2)) − (−3 − (−2)) = 2
    c, r, rc, rr = t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0])
    assert dpo.dpo_loss(c, r, rc, rr, beta=0.5).item() == pytest.approx(math.log(1 + math.exp(-1.0)))
    assert dpo.dpo_loss(c, r, rc, rr, beta=0.5, margin=1.0).item() == pytest.approx(math.log(2))  # βh − γ = 0
    # IPO: (h − 1/(2β))² = (2 − 1)² = 1 with β = 0.5; with β = 0.25: (2 − 2)² = 0
    assert dpo.ipo_loss(c, r, rc, rr, beta=0.5).item() == pytest.approx(1.0)
    assert dpo.ipo_loss(c, r, rc, rr, beta=0.25).item() == pytest.approx(0.0)
    # length-normalised is reference-free: −log σ(β(avg_c − avg_r) − γ) = −log σ(2·(−1 − (−3)) − 1) = −log σ(3)
    assert dpo.length_normalised_loss(c, r, rc, rr, beta=2.0, margin=1.0).item() == pytest.approx(
        math.log(1 + math.exp(-3.0)))
    assert set(dpo.LOSSES) == {"sigmoid", "ipo", "length_normalised", "cdpo", "robust"}  # + issue 21's two


def test_rloo_baseline_and_loss_hand_values():
    # group 1: rewards 1, 2, 6 → baselines 4, 3.5, 1.5 → advantages −3, −1.5, 4.5
    adv = rloo.leave_one_out_advantages(torch.tensor([1.0, 2.0, 6.0, 5.0, 5.0, 5.0]), k=3)
    assert adv.tolist() == pytest.approx([-3.0, -1.5, 4.5, 0.0, 0.0, 0.0])
    # ratios e^0.5 ≈ 1.65 (A = +1: clipped at 1.2) and e^-0.5 ≈ 0.61 (A = +1: unclipped min) over n_seqs = 4
    lp, old, a = torch.tensor([0.5, -0.5]), torch.zeros(2), torch.ones(2)
    loss, st = rloo.rloo_loss(lp, old, a, clip=0.2, n_seqs=4)
    assert loss.item() == pytest.approx((-1.2 - math.exp(-0.5)) / 4)
    assert st["clipfrac"] == 1.0


def test_kl_controller_moves_towards_target():
    ctl = rollout.KLController(0.1, target=6.0, horizon=100)
    ctl.update(kl=12.0, n=10)  # error clipped at +0.2 → β·(1 + 0.2·10/100)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    fixed = rollout.KLController(0.1)
    fixed.update(kl=100.0, n=10)
    assert fixed.value == 0.1


# ----- DPO on a tiny model -----


def _examples(n: int = 16) -> list[dict]:
    from farm.models.generation import format_prompt

    return [{"prompt": format_prompt(f"Sort: {i % 7} {i % 5}"), "chosen": f"{i % 5} {i % 7}",
             "rejected": f"zz {i} ab"} for i in range(n)]


def test_dpo_loss_is_log2_at_init_and_metrics_are_zero(tiny):
    model, tok = tiny
    ex = pairs.precompute_reference(model, tok, _examples(8), dpo.LOSSES["sigmoid"])
    batch = collate_pairs(tok, ex)
    for name in ("sigmoid",):
        loss, stats = pairs.pair_loss_sum(model, batch, dpo.LOSSES[name], beta=0.1)
        assert loss.item() / 8 == pytest.approx(math.log(2), abs=1e-5)
        assert stats["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    # IPO at init: h = 0 → (1/(2β))² = 25 with β = 0.1
    loss, _ = pairs.pair_loss_sum(model, batch, dpo.LOSSES["ipo"], beta=0.1)
    assert loss.item() / 8 == pytest.approx(25.0, rel=1e-5)


def test_dpo_tail_logprobs_equal_the_shared_full_forward(tiny):
    model, tok = tiny
    b = collate_pairs(tok, _examples(4))
    fast, ent = rollout.response_logprobs_tail(model, b["prompt_ids"], b["prompt_mask"], b["response_ids"],
                                          b["response_mask"], 0.7, return_entropy=True)
    full, ent_full = maths.response_logprobs(model, b["prompt_ids"], b["prompt_mask"], b["response_ids"],
                                             b["response_mask"], 0.7, return_entropy=True)
    m = b["response_mask"].bool()
    torch.testing.assert_close(fast[m], full[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[m], ent_full[m], atol=1e-5, rtol=1e-5)
    assert b["response_ids"][0, int(m[0].sum()) - 1] == tok.eos_token_id  # responses end with EOS


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_dpo_grad_accumulation_1x8_equals_8x1(tiny_dir):
    ex = None
    after = []
    for per_device, accum in ((8, 1), (1, 8)):
        model, tok = load_causal_lm(str(tiny_dir), device="cpu")
        cfg = dpo.Config(train=TrainConfig(lr=0.5, optimizer="sgd", per_device_batch_size=per_device,
                                           grad_accum=accum, max_steps=1, max_grad_norm=0.0, progress=False))
        ex = ex or pairs.precompute_reference(model, tok, _examples(8), dpo.LOSSES[cfg.loss])
        dpo.train(model, tok, ex, cfg)
        after.append(_params(model))
    for name in after[0]:
        torch.testing.assert_close(after[0][name], after[1][name], atol=1e-6, rtol=1e-5)


def test_dpo_run_from_files_changes_every_parameter_and_learns(tiny_dir, tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    rows = [{"instruction": f"Sort: {i % 7} {i % 5}", "input": "", "output_1": f"zz {i} ab",
             "output_2": f"{i % 5} {i % 7}", "p_output_2": 1.0 if i % 3 else 0.9} for i in range(32)]
    rows.append({**rows[0], "p_output_2": 0.5})  # a tie: dropped
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = _params(load_causal_lm(str(tiny_dir), device="cpu")[0])
    cfg = dpo.Config(policy=str(tiny_dir), preferences=str(prefs), output_dir=str(tmp_path / "out"),
                     train=TrainConfig(lr=3e-3, schedule="constant", warmup_ratio=0.0, per_device_batch_size=8,
                                       epochs=3, progress=False))
    res = dpo.run(cfg)
    assert res["pairs"] == 32 and res["steps"] == 12
    hist = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert hist[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # first step: policy = reference
    assert hist[-1]["loss"] < 0.6 and hist[-1]["accuracy"] > 0.7 and hist[-1]["reward_margin"] > 0
    after = _params(load_causal_lm(res["model_dir"], device="cpu")[0])
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged


# ----- PPO -----


def _rollout(model, tok, n=8, max_new_tokens=10, seed=0):
    ref = copy.deepcopy(model)
    return rollout.collect_rollout(model, ref, tok, (RECORDS * 4)[:n], FunctionScorer(digit_fraction),
                               temperature=0.7, max_new_tokens=max_new_tokens, max_prompt_tokens=None, seed=seed)


def _eos_prone(model, tok, scale: float = 6.0):
    """Make EOS likely in some contexts so rollouts have responses of many lengths (real masks)."""
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.eos_token_id] *= scale
    return model


def test_ppo_importance_ratio_is_exactly_one_on_first_minibatch(tiny):
    model, tok = tiny
    ro, _ = _rollout(_eos_prone(model, tok), tok)
    i = torch.arange(4)  # a micro-batch of a different size than the rollout's log-prob pass
    lp = maths.response_logprobs(model, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i],
                                 ro.response_mask[i], temperature=0.7)
    m = ro.response_mask[i].bool()
    ratio = torch.exp(lp - ro.logprobs[i])[m]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6, rtol=0)
    # the reference (a copy of the policy) agrees too: KL = 0 at the first step
    assert maths.masked_mean(maths.kl_estimate(ro.logprobs, ro.ref_logprobs), ro.response_mask.float()).abs() < 1e-6


def test_gae_loop_equals_vectorised_on_real_rollout_masks(tiny):
    model, tok = tiny
    ro, _ = _rollout(_eos_prone(model, tok), tok, n=16, max_new_tokens=12)
    mask = ro.response_mask.float()
    assert len(set(mask.sum(-1).tolist())) > 2  # responses of several lengths
    vm = rollout.value_model_from_policy(model)
    with torch.no_grad():
        torch.nn.init.normal_(vm.score.weight, std=0.3)
        values = rollout.response_values(vm, ro) * mask
    rewards = -0.05 * maths.kl_estimate(ro.logprobs, ro.ref_logprobs + 0.1) * mask + maths.terminal_rewards(
        ro.scores, ro.response_mask)
    for gamma, lam in ((1.0, 0.95), (0.99, 0.8)):
        a1, r1 = maths.gae_loop(rewards, values, mask, gamma, lam)
        a2, r2 = maths.gae(rewards, values, mask, gamma, lam)
        torch.testing.assert_close(a1, a2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r1, r2, atol=1e-5, rtol=1e-5)


def test_ppo_policy_loss_grad_accumulation_1x8_equals_8x1(tiny):
    model, tok = tiny
    ro, _ = _rollout(_eos_prone(model, tok), tok, n=8, max_new_tokens=10)
    mask = ro.response_mask.float()
    g = torch.Generator().manual_seed(0)
    adv, ret = torch.randn(mask.shape, generator=g), torch.randn(mask.shape, generator=g)
    old_lp = ro.logprobs - 0.1 * torch.rand(mask.shape, generator=g)  # ratios ≠ 1 so the clip is active
    old_v = torch.zeros(mask.shape)
    n_tokens = mask.sum()
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(micro: int) -> list[torch.Tensor]:
        model.zero_grad()
        for s in range(0, 8, micro):
            i = torch.arange(s, s + micro)
            lp = maths.response_logprobs(model, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i],
                                         ro.response_mask[i], 0.7)
            pg, vf, _ = ppo.ppo_losses(lp, old_lp[i], adv[i], old_v[i] + lp * 0, old_v[i], ret[i], mask[i],
                                       0.2, 0.2, n_tokens)
            pg.backward()
        return [p.grad.clone() for p in params]

    for a, b in zip(grads(8), grads(1)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_ppo_reward_goes_up_and_every_parameter_changes(tiny):
    model, tok = tiny
    before = _params(model)
    cfg = ppo.Config(steps=30, rollout_batch_size=16, minibatch_size=8, micro_batch_size=8, max_new_tokens=8,
                     value_lr=3e-3, kl_coef=0.01, train=rl_train_config(lr=3e-3, progress=False))
    vm = rollout.value_model_from_policy(model)
    v_before = _params(vm)
    hist = ppo.train(model, tok, RECORDS, FunctionScorer(digit_fraction), cfg, value_model=vm)
    first = sum(h["reward"] for h in hist[:5]) / 5
    last = sum(h["reward"] for h in hist[-5:]) / 5
    assert last > first + 0.2, (first, last)
    assert hist[-1]["kl"] > 0  # moved away from the reference
    for key in ("kl", "entropy", "clipfrac", "value_loss", "policy_loss", "time_generation", "time_scoring",
                "time_update", "non_score_reward"):
        assert all(math.isfinite(h[key]) for h in hist), key
    after, v_after = _params(model), _params(vm)
    assert not [n for n in before if torch.equal(before[n], after[n])]
    assert not [n for n in v_before if torch.equal(v_before[n], v_after[n])]


def test_ppo_run_from_files_with_reward_model_and_checkpoints(tiny_dir, tmp_path):
    from farm.models.loading import load_scalar_model

    rm, rtok = load_scalar_model(str(tiny_dir), device="cpu")
    with torch.no_grad():
        torch.nn.init.normal_(rm.score.weight, std=0.5)  # a (random) non-constant reward model
    save_model(rm, rtok, tmp_path / "rm")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    cfg = ppo.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl"),
                     reward=RewardSpec(model=str(tmp_path / "rm")), output_dir=str(tmp_path / "out"), steps=4,
                     rollout_batch_size=8, minibatch_size=4, micro_batch_size=2, max_new_tokens=6, save_every=2,
                     adaptive_kl=True, kl_estimator="k3", missing_eos_score=-1.0,
                     train=rl_train_config(lr=1e-3, progress=False))
    res = ppo.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and res["steps"] == 4
    assert rows[0]["kl_coef"] == cfg.kl_coef and rows[-1]["kl_coef"] != cfg.kl_coef  # adaptive controller moved
    assert (tmp_path / "out" / "checkpoints" / "step_2" / "COMPLETE").exists()
    assert (tmp_path / "out" / "model" / "COMPLETE").exists()


# ----- RLOO -----


def test_rloo_reward_goes_up(tiny):
    model, tok = tiny
    before = _params(model)
    cfg = rloo.Config(steps=30, prompts_per_step=4, k=4, max_new_tokens=8, kl_coef=0.01,
                      train=rl_train_config(lr=1e-2, progress=False))
    hist = rloo.train(model, tok, RECORDS, FunctionScorer(digit_fraction), cfg)
    first = sum(h["reward"] for h in hist[:5]) / 5
    last = sum(h["reward"] for h in hist[-5:]) / 5
    assert last > first + 0.2, (first, last)
    after = _params(model)
    assert not [n for n in before if torch.equal(before[n], after[n])]


def test_rloo_kl_as_loss_and_several_epochs_run(tiny):
    model, tok = tiny
    cfg = rloo.Config(steps=2, prompts_per_step=2, k=2, minibatch_size=2, micro_batch_size=1, epochs=2,
                      kl_in_reward=False, max_new_tokens=6, train=rl_train_config(lr=1e-2, progress=False))
    hist = rloo.train(model, tok, RECORDS, FunctionScorer(digit_fraction), cfg)
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    with pytest.raises(ValueError, match="k must be"):
        rloo.Config(k=1)


@pytest.mark.parametrize("method", ["dpo", "ppo", "rloo", "online_dpo"])
def test_shipped_configs_load_and_open_with_their_command(method):
    from pathlib import Path

    from farm.config import load_config
    from farm.methods import load_method

    path = Path(__file__).parent.parent / "configs" / f"train_{method}.yaml"
    assert path.read_text().splitlines()[0].startswith(f"# farm train {method} --config {path.name}".replace(
        path.name, f"configs/{path.name}"))
    cfg = load_config(load_method(method).Config, path)
    assert cfg.output_dir == f"runs/{method}"


def test_rloo_on_policy_single_forward_equals_micro_batched_path(tiny_dir):
    """The fast path (training forward = behaviour forward) and the general path (separate no-grad pass,
    2 micro-batches of 8) give the same update on the same rollout."""
    after = []
    for micro in (16, 8):
        model, tok = load_causal_lm(str(tiny_dir), device="cpu")
        cfg = rloo.Config(steps=1, prompts_per_step=4, k=4, minibatch_size=16, micro_batch_size=micro,
                          max_new_tokens=8, kl_coef=0.1, train=rl_train_config(lr=1e-2, progress=False))
        rloo.train(model, tok, RECORDS, FunctionScorer(digit_fraction), cfg)
        after.append(_params(model))
    for name in after[0]:
        torch.testing.assert_close(after[0][name], after[1][name], atol=1e-5, rtol=1e-4)


def test_farm_train_cli_runs_dpo_from_files(tiny_dir, tmp_path, capsys):
    from farm.cli import main

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"instruction": f"Sort: {i} 1", "output_1": "no", "output_2": f"1 {i}",
                                         "p_output_2": 1.0}) + "\n" for i in range(8)))
    rc = main(["train", "dpo", f"policy={tiny_dir}", f"preferences={prefs}", f"output_dir={tmp_path / 'o'}",
               "loss=ipo", "train.per_device_batch_size=4", "train.progress=false"])
    assert rc == 0 and (tmp_path / "o" / "model" / "COMPLETE").exists()
    assert json.loads(capsys.readouterr().out)["loss_type"] == "ipo"


def test_dropout_is_disabled_so_the_first_dpo_step_is_exactly_log2(tiny):
    model, tok = tiny
    for m in model.modules():  # a model trained with attention dropout
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = 0.5
    cfg = dpo.Config(train=TrainConfig(per_device_batch_size=8, max_steps=1, progress=False))
    res = dpo.train(model, tok, _examples(8), cfg)
    assert res["history"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_ppo_run_resumes_exactly_where_it_stopped(tiny_dir, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))

    calls: list[int] = []

    def counted(instruction: str, input: str, output: str) -> float:
        calls.append(1)
        return digit_fraction(instruction, input, output)

    def run(out: str, steps: int) -> list[dict]:
        calls.clear()
        cfg = ppo.Config(policy=str(tiny_dir), prompts=str(tmp_path / "prompts.jsonl"), output_dir=str(tmp_path / out),
                         steps=steps, rollout_batch_size=8, minibatch_size=4, micro_batch_size=4, max_new_tokens=6,
                         save_every=2, kl_coef=0.02, train=rl_train_config(lr=3e-3, progress=False))
        ppo.run(cfg, scorer=FunctionScorer(counted))
        return [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    straight = run("a", 4)
    run("b", 2)  # "killed" after step 2 ...
    resumed = run("b", 4)  # ... and re-run with the same command
    assert len(calls) == 2 * 8  # only iterations 3 and 4 were run (8 rollouts each)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for key in ("reward", "kl", "policy_loss", "value_loss", "entropy"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in straight], rel=1e-5, abs=1e-7), key
