"""The methods' shared floor: renamed config keys name their new place; run-level settings land where each Config
keeps them; one AdamW set-up whose per-method defaults are the old numbers; one checkpoint format for `fit` and
the RL loops, damage detected in both."""

from __future__ import annotations

import pytest
import torch

from farm.config import load_config
from farm.errors import FarmError
from farm.methods import compare_settings, ppo, rloo, safe_ppo, sft, training_annotator
from farm.methods.loop import TrainConfig, load_checkpoint, make_optimizer, save_checkpoint
from farm.models.tiny import TinySpec, build_tiny


@pytest.mark.parametrize("cls, old, new", [
    (ppo.Config, "lr", "train.lr"), (rloo.Config, "seed", "train.seed"), (ppo.Config, "reward_judge", "reward.judge"),
    (rloo.Config, "judge_both_orders", "reward.judge_both_orders"), (sft.Config, "style", "prompt_style"),
    (safe_ppo.Config, "steps", "ppo.steps"), (safe_ppo.Config, "lr", "ppo.train.lr"),
])
def test_an_old_key_is_refused_with_the_name_of_its_new_place(cls, old, new, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"policy: p\ndata: d\noutput_dir: o\n{old}: 1\n" if cls is sft.Config else f"{old}: 1\n")
    with pytest.raises(FarmError) as e:
        load_config(cls, path)
    assert f"`{old}` is now `{new}`" in str(e.value) and e.value.line == (4 if cls is sft.Config else 1)


def test_a_nested_old_key_names_the_nested_new_place():
    with pytest.raises(FarmError, match=r"`ppo.lr` is now `ppo.train.lr`"):
        load_config(safe_ppo.Config, overrides=["ppo.lr=1e-3"])


def test_run_level_settings_go_where_each_config_keeps_them():
    values = {"policy": "p", "reward_model": "rm", "seed": 7, "device": "cpu", "progress": False,
              "prompt_style": "chat", "max_new_tokens": 9, "judge": "pool", "data": "d", "output_dir": "o"}
    cfg = load_config(ppo.Config, base=compare_settings(ppo.Config, values))
    assert (cfg.policy, cfg.reward.model, cfg.train.seed, cfg.train.device, cfg.prompt_style,
            cfg.max_new_tokens) == ("p", "rm", 7, "cpu", "chat", 9)
    assert cfg.reward.judge == "" and training_annotator(cfg) == ""  # the run's judge is not a PPO reward
    both = load_config(safe_ppo.Config, base=compare_settings(safe_ppo.Config, values))
    assert (both.reward_model, both.ppo.train.seed, both.train.seed, both.ppo.max_new_tokens) == ("rm", 7, 7, 9)
    s = load_config(sft.Config, base=compare_settings(sft.Config, values))
    assert (s.data, s.prompt_style, s.train.seed, s.train.lr) == ("d", "chat", 7, sft.Config("", "", "").train.lr)


def test_one_make_optimizer_keeps_each_loops_old_adamw_settings():
    w = [torch.nn.Parameter(torch.zeros(3))]
    fit_opt = make_optimizer(w, TrainConfig())  # fit's: betas (0.9, 0.95), no weight decay, torch's eps
    rl_opt = make_optimizer(w, ppo.Config().train, lr=2e-3)  # the RL loops': torch's AdamW defaults, eps 1e-5
    old = torch.optim.AdamW(w, lr=2e-3, eps=1e-5).param_groups[0]
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert rl_opt.param_groups[0][key] == old[key], key
    assert fit_opt.param_groups[0]["betas"] == (0.9, 0.95) and fit_opt.param_groups[0]["weight_decay"] == 0.0
    assert rloo.Config().train.adam_eps == safe_ppo.Config().ppo.train.adam_eps == 1e-5


def test_one_checkpoint_format_refuses_a_damaged_weight_file_and_ignores_a_half_written_one(tmp_path):
    from farm.models.loading import load_causal_lm

    model, tok = load_causal_lm(str(build_tiny(["a b c d"] * 4, tmp_path / "tiny", TinySpec(
        n_layers=1, hidden=16, heads=2, intermediate=32, vocab_size=280), seed=0)), device="cpu")
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(ckpt, tok, 3, {"history": [1, 2, 3]}, policy=model, value=model)
    state = load_checkpoint(ckpt, ("policy", "value"))
    assert state["step"] == 3 and state["history"] == [1, 2, 3] and set(state["files"]) == {"policy", "value"}
    (ckpt / "value" / "step.txt").write_text("4\n")  # a model newer than the state: killed between the writes
    assert load_checkpoint(ckpt, ("policy", "value")) is None
    (ckpt / "value" / "step.txt").write_text("3\n")
    blob = bytearray((ckpt / "policy" / "model.safetensors").read_bytes())
    blob[-5] ^= 0x01
    (ckpt / "policy" / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(FarmError, match="checkpoint is damaged"):
        load_checkpoint(ckpt, ("policy", "value"))


def test_sft_loss_on_response_positions_only_equals_the_full_forward_loss():
    # the LM head run only where a label is: the same summed cross-entropy as the full logits through sft_loss
    import tempfile

    import torch
    import torch.nn.functional as F

    from farm.methods.data import tokenize_sft
    from farm.methods.loop import response_logits, sft_loss
    from farm.models.loading import load_causal_lm
    from farm.models.tiny import TinySpec, build_tiny

    with tempfile.TemporaryDirectory() as d:
        recs = [{"instruction": f"say {w}", "input": "", "output": f"{w} {w}"} for w in ("cat", "dog", "a b c d")]
        path = build_tiny([r["instruction"] + " " + r["output"] for r in recs] * 10, d,
                          TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)
        model, tok = load_causal_lm(str(path), device="cpu")
        b = tokenize_sft(tok, recs, 64)
        full, n = sft_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        logits, targets = response_logits(model, b)
        assert len(targets) == int(n) and logits.shape == (int(n), model.config.vocab_size)
        assert F.cross_entropy(logits.float(), targets, reduction="sum").item() == pytest.approx(full.item(),
                                                                                                 rel=1e-5)
        # the gradient too
        model.zero_grad()
        full.backward()
        g_full = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        logits, targets = response_logits(model, b)
        F.cross_entropy(logits.float(), targets, reduction="sum").backward()
        for a, p in zip(g_full, model.parameters()):
            assert torch.allclose(a, p.grad, atol=1e-5)


def test_a_reward_function_by_name_and_a_bad_name_is_refused(tmp_path):
    from farm.methods import grpo
    from farm.methods.scorers import FunctionScorer, RewardSpec, reward_scorer

    cfg = grpo.Config(reward=RewardSpec(function="farm.worlds.tasks:quality"), output_dir=str(tmp_path))
    scorer = reward_scorer(cfg, "grpo", None, None)
    from farm.worlds.tasks import build, quality

    rec = build(0, sft=4, preference=4, unlabeled=4, eval=4).eval[0]
    want = quality(rec["instruction"], rec.get("input", ""), "c b a")
    assert isinstance(scorer, FunctionScorer) and scorer.score([rec], ["c b a"]) == [want]
    for bad in ("farm.worlds.tasks:no_such", "farm.no_module:f", "farm.worlds.tasks"):
        with pytest.raises(FarmError, match="reward.function|module:function"):
            reward_scorer(grpo.Config(reward=RewardSpec(function=bad)), "grpo", None, None)


def test_dpo_with_the_prompt_run_once_gives_the_same_loss_and_gradient(tmp_path):
    # shared_prefix: the prompt runs once for both responses; the same loss and gradient as the two whole rows
    from farm.methods import dpo
    from farm.methods.data import collate_pairs, tokenize_pairs
    from farm.methods.pairs import pair_loss_sum
    from farm.models.loading import load_causal_lm

    ex = [{"prompt": f"Q: repeat {w} please\nA:", "chosen": f" {w}", "rejected": f" {w} {w} no"} for w in "abcd"]
    path = build_tiny([e["prompt"] + e["chosen"] + e["rejected"] for e in ex] * 5, tmp_path / "m",
                      TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64, vocab_size=300), seed=0)
    model, tok = load_causal_lm(str(path), device="cpu")
    ex = [{**e, "ref": [-3.0, -4.0]} for e in tokenize_pairs(tok, ex, 64, 16)]
    b = collate_pairs(tok, ex)
    grads = []
    for shared in (False, True):
        model.zero_grad()
        loss, _ = pair_loss_sum(model, b, dpo.LOSSES["sigmoid"], beta=0.1, nll_weight=0.5, shared_prefix=shared)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, c in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, c, atol=1e-5)


def test_k_samples_of_a_prompt_with_the_prompt_run_once_give_the_same_logprobs_entropy_and_gradient(tmp_path):
    # rollout.group_logprobs_tail (RLOO's and GRPO's log-prob passes): the prompt runs once for its k responses;
    # the same log-probs, entropy and gradient as the whole rows, in the rollout's row order; other rows fall back
    from farm.methods.rollout import group_logprobs_tail, response_logprobs_tail
    from farm.models.generation import generate
    from farm.models.loading import load_causal_lm

    prompts = ["Q: repeat a please\nA:", "Q: sort 3 1 2 and then a longer prompt\nA:", "Q: x\nA:"]
    path = build_tiny(prompts * 5, tmp_path / "m", TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64,
                                                            vocab_size=300), seed=0)
    model, tok = load_causal_lm(str(path), device="cpu")
    model.eval()
    k = 4
    g = generate(model, tok, [p for p in prompts for _ in range(k)], max_new_tokens=8, seed=3)
    assert len(set(map(tuple, g.response_ids.tolist()))) > len(prompts)  # the k samples differ
    args = (g.prompt_ids, g.prompt_mask, g.response_ids, g.response_mask, 0.7)
    m = g.response_mask.float()
    out = []
    for fn in (lambda: response_logprobs_tail(model, *args, return_entropy=True),
               lambda: group_logprobs_tail(model, *args, k=k, return_entropy=True)):
        model.zero_grad()
        lp, ent = fn()
        (lp * m).sum().backward()
        out.append((lp * m, ent * m, [p.grad.clone() for p in model.parameters()]))
    (lp_w, ent_w, g_w), (lp_s, ent_s, g_s) = out
    torch.testing.assert_close(lp_s, lp_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent_s, ent_w, atol=1e-5, rtol=1e-5)
    for a, c in zip(g_s, g_w):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
    mixed = torch.cat([g.prompt_ids[1:], g.prompt_ids[:1]])  # groups broken: the whole-row path, same numbers
    with torch.no_grad():
        assert torch.equal(group_logprobs_tail(model, mixed, *args[1:], k=k),
                           response_logprobs_tail(model, mixed, *args[1:]))
