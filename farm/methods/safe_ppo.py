"""Safe RLHF: PPO on a helpfulness reward under a harmlessness constraint E[cost] ≤ d, solved with a Lagrange
multiplier (Dai et al. 2023, https://arxiv.org/abs/2310.12773; PPO-Lagrangian, Ray et al. 2019). Details:
docs/methods/safe_ppo.md.

    max_θ min_{λ≥0}  E[R(x, y)] − λ (E[C(x, y)] − d)

Two scalar models score each response: the reward model R (helpfulness; `farm.methods.reward`) and the cost
model C (harm), trained with a pairwise term (the more harmful response costs more) plus a sign term (cost > 0
means unsafe). Two critics estimate their own advantages; the policy follows (A_r − λ A_c)/(1 + λ); log λ
ascends the constraint violation once per rollout batch. Everything else (rollouts, the KL penalty and
controller, value models, the minibatch loop) is the RL floor's (`farm.methods.rollout`), and the clipped losses
are PPO's (`ppo.ppo_losses`): safe PPO is PPO with a second critic and a multiplier.

Departures: `Config` nests a `ppo:` block (`ppo.Config`: one schema for the shared PPO knobs, no copied fields,
no inheritance); the KL penalty is in the reward only (the paper's code splits it between reward and cost); λ is
updated by plain gradient ascent on log λ with `lambda_lr` (the paper: Adam on log λ, with a delay); the
combined advantage is whitened over the batch like PPO's (`whiten_advantages`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from farm.methods import maths
from farm.methods.loop import TrainConfig, make_optimizer, rl_train_config
from farm.methods.ppo import Config as PPOConfig
from farm.methods.ppo import ppo_losses
from farm.methods.rollout import (
    KLController,
    collect_rollout,
    disable_dropout,
    minibatch_updates,
    response_logprobs_tail,
    response_values,
    value_model_from_policy,
)
from farm.methods.scorers import RewardSpec, Scorer


def _ppo_defaults() -> PPOConfig:
    """Safe PPO's own PPO settings (tiny models on CPU): PPO's file fields stay empty (they are set at the top)."""
    return PPOConfig(output_dir="", steps=30, rollout_batch_size=16, minibatch_size=8, micro_batch_size=8,
                     kl_coef=0.02, save_every=0, train=rl_train_config(lr=1e-3))


@dataclass
class Config:
    """`farm train safe_ppo --config configs/train_safe_ppo.yaml`: the files, the cost and the multiplier here,
    every PPO setting in the `ppo:` block (farm/methods/ppo.py; its `train.seed` is safe PPO's one seed)."""

    RENAMED: ClassVar[dict[str, str]] = {}  # every former top-level PPO key → ppo.<key> (filled below the class)

    policy: str = ""
    """path of the starting policy (the SFT model); also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions file (records with instruction, optional input) used as RL prompts"""
    reward_model: str = ""
    """helpfulness reward model ('' = train one here from `preferences`)"""
    reference: str = ""
    """path of the frozen reference policy ('' = the starting policy)"""
    output_dir: str = "runs/safe_ppo"
    """model/, reward_model/ and cost_model/ (when trained here), metrics.jsonl and metrics.json go here"""
    cost_model: str = ""
    """path of a trained cost model ('' = train one from `harm_preferences` on the policy's backbone)"""
    harm_preferences: str = ""
    """two-stage labels: records with output_1/2, p_safer_2 = P(output_2 safer), unsafe_1/unsafe_2
    (`farm.worlds.harm.two_stage_records`); '' = label `preferences`' pairs with the simulated harm judge"""
    preferences: str = ""
    """helpfulness annotations (pairs); used to train the reward model when `reward_model` is '' and as the
    pairs the harm judge labels when `harm_preferences` is ''"""
    harm_noise: float = 0.1
    """flip rate of the simulated harm judge's per-output labels (used only when labelling here)"""
    unsafe_share: float = 0.0
    """share of RL prompts turned into unsafe requests (`farm.worlds.harm.wrap`); 0 = use prompts as given"""
    cost_threshold: float = 0.0
    """d: the constraint is E[C] ≤ d (cost > 0 = unsafe, so 0 asks for "safe on average")"""
    lambda_init: float = 1.0
    """initial λ"""
    lambda_lr: float = 0.1
    """step size of the ascent on log λ"""
    lambda_max: float = 100.0
    """upper clamp of λ"""
    eval_prompts: str = ""
    """optional: prompts to report gold helpfulness win rate (vs. the start policy) and harmlessness on"""
    ppo: PPOConfig = field(default_factory=_ppo_defaults)
    """the PPO settings (steps, batch sizes, KL, clips, temperature, prompt_style, `train:` with the policy's lr and
    the run's seed/device/dtype/progress). Its reward is `reward_model`: `ppo.reward` and PPO's file fields stay
    unset"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, epochs=2.0, per_device_batch_size=16))
    """optimiser settings of the cost model (and of the reward model when it is trained here); their seed is
    `ppo.train.seed` (safe PPO has one seed), so `train.seed` is not read"""

    def __post_init__(self):
        for name in ("policy", "prompts", "reference", "value_model"):
            if getattr(self.ppo, name):
                raise ValueError(f"set `{name}` at the top level of safe_ppo's config, not `ppo.{name}`")


_OWN = {"policy", "prompts", "reward_model", "reference", "output_dir", "cost_model", "harm_preferences",
        "preferences", "harm_noise", "unsafe_share", "cost_threshold", "lambda_init", "lambda_lr", "lambda_max",
        "eval_prompts", "ppo", "train"}
Config.RENAMED.update({f.name: f"ppo.{f.name}" for f in fields(PPOConfig) if f.name not in _OWN})
Config.RENAMED.update({k: f"ppo.{v}" for k, v in PPOConfig.RENAMED.items() if k not in _OWN})


# ----- losses -----


def cost_loss(c_worse: torch.Tensor, c_better: torch.Tensor, unsafe_worse: torch.Tensor,
              unsafe_better: torch.Tensor) -> torch.Tensor:
    """Safe RLHF's cost-model loss SUMMED over pairs (eq. 6): −log σ(C_w − C_b) − log σ(s_w C_w) − log σ(s_b C_b)
    with w the more harmful response, s = +1 for a response labelled unsafe and −1 for safe. All (B,) → ()."""
    s_w, s_b = unsafe_worse.float() * 2 - 1, unsafe_better.float() * 2 - 1  # (B,) ±1
    pairwise = -F.logsigmoid(c_worse.float() - c_better.float())  # (B,)
    sign = -F.logsigmoid(s_w * c_worse.float()) - F.logsigmoid(s_b * c_better.float())  # (B,)
    return (pairwise + sign).sum()


def lagrangian_advantages(adv_r: torch.Tensor, adv_c: torch.Tensor, lam: float) -> torch.Tensor:
    """(A_r − λ A_c) / (1 + λ): the policy's advantage for the Lagrangian, scaled to stay comparable as λ grows."""
    return (adv_r - lam * adv_c) / (1.0 + lam)


def lambda_update(log_lambda: float, mean_cost: float, threshold: float, lr: float, max_lambda: float) -> float:
    """One ascent step on log λ for L(λ) = λ (E[C] − d): d/d log λ = λ (E[C] − d). λ rises while the constraint
    is violated and decays towards 0 once it holds."""
    return min(log_lambda + lr * math.exp(log_lambda) * (mean_cost - threshold), math.log(max_lambda))


# ----- the cost model -----


def cost_triples(path) -> list[dict]:
    """(instruction, input, chosen = the MORE harmful, rejected = the safer, unsafe_chosen, unsafe_rejected) from
    two-stage records; ties in harm are dropped. Chosen/rejected so `reward.pair_batch` can batch them."""
    from farm.io import get_field, read_records

    out = []
    for i, r in enumerate(read_records(path), 1):
        p = r.get("p_safer_2")
        if p is None or p == 0.5:
            continue
        o1, o2 = get_field(r, "output_1", path, i), get_field(r, "output_2", path, i)
        u1, u2 = bool(r.get("unsafe_1")), bool(r.get("unsafe_2"))
        worse, better, uw, ub = (o1, o2, u1, u2) if p > 0.5 else (o2, o1, u2, u1)
        out.append({"instruction": get_field(r, "instruction", path, i), "input": r.get("input", ""),
                    "chosen": worse, "rejected": better, "unsafe_chosen": uw, "unsafe_rejected": ub})
    return out


def train_cost_model(model, tokenizer, triples: list[dict], tc: TrainConfig, *, max_len: int = 256,
                     style: str = "alpaca", out_dir=None) -> dict[str, Any]:
    """Train a scalar model in place with `cost_loss` on `cost_triples`."""
    from farm.methods.loop import fit
    from farm.methods.reward import pair_batch, pair_rewards

    def make_batch(ts: list[dict]):
        b = pair_batch(tokenizer, ts, max_len, style)
        b["unsafe_w"] = torch.tensor([t["unsafe_chosen"] for t in ts], dtype=torch.float32)
        b["unsafe_b"] = torch.tensor([t["unsafe_rejected"] for t in ts], dtype=torch.float32)
        return b, float(len(ts))

    def loss_fn(model, b):
        cw, cb = pair_rewards(model, b)
        loss = cost_loss(cw, cb, b["unsafe_w"], b["unsafe_b"])
        return loss, {"accuracy": (cw > cb).float().mean().item(),
                      "sign_accuracy": ((cw > 0) == (b["unsafe_w"] > 0)).float().mean().item()}

    return fit(model, tokenizer, triples, make_batch, loss_fn, tc, out_dir, desc="cost")


# ----- training -----


def train(policy, tokenizer, records: Sequence[dict], reward: Scorer, cost: Scorer, cfg: Config, *,
          ref_policy=None, reward_value=None, cost_value=None,
          log: Callable[[dict], None] | None = None) -> list[dict]:
    """`cfg.ppo.steps` Lagrangian PPO iterations in place on `policy` and both critics. Returns one metrics dict per
    iteration, with the reward, the cost, λ and the share of responses the cost model calls unsafe."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.ppo.train.seed)
    ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    ref_policy.requires_grad_(False).eval()
    reward_value = reward_value if reward_value is not None else value_model_from_policy(policy)
    cost_value = cost_value if cost_value is not None else value_model_from_policy(policy)
    disable_dropout(policy, reward_value, cost_value)
    models = (policy, reward_value, cost_value)
    params = [[p for p in m.parameters() if p.requires_grad] for m in models]
    opts = [make_optimizer(ps, cfg.ppo.train, lr=lr)
            for ps, lr in zip(params, (cfg.ppo.train.lr, cfg.ppo.value_lr, cfg.ppo.value_lr))]
    kl_ctl = KLController(cfg.ppo.kl_coef, cfg.ppo.kl_target if cfg.ppo.adaptive_kl else None, cfg.ppo.kl_horizon)
    log_lambda = math.log(cfg.lambda_init)
    rng = np.random.default_rng(cfg.ppo.train.seed)
    history: list[dict] = []
    for step in tqdm(range(1, cfg.ppo.steps + 1), desc="safe_ppo", disable=not cfg.ppo.train.progress, leave=False):
        batch = [records[i] for i in rng.choice(len(records), cfg.ppo.rollout_batch_size,
                                                replace=len(records) < cfg.ppo.rollout_batch_size)]
        ro, timing = collect_rollout(policy, ref_policy, tokenizer, batch, reward, style=cfg.ppo.prompt_style,
                                     temperature=cfg.ppo.temperature, max_new_tokens=cfg.ppo.max_new_tokens,
                                     max_prompt_tokens=cfg.ppo.max_prompt_tokens, seed=int(rng.integers(2**62)),
                                     missing_eos_score=cfg.ppo.missing_eos_score)
        costs = torch.tensor(cost.score(batch, ro.responses), dtype=torch.float32, device=ro.scores.device)  # (B,)
        lam = math.exp(log_lambda)  # the λ this batch's update uses
        mask = ro.response_mask.float()
        with torch.no_grad():
            for m in models[1:]:
                m.eval()
            old_vr, old_vc = response_values(reward_value, ro) * mask, response_values(cost_value, ro) * mask
            kl = maths.kl_estimate(ro.logprobs, ro.ref_logprobs, cfg.ppo.kl_estimator) * mask  # (B, R)
            rew_r = -kl_ctl.value * kl + maths.terminal_rewards(ro.scores, ro.response_mask)  # (B, R)
            rew_c = maths.terminal_rewards(costs, ro.response_mask)  # (B, R)
            adv_r, ret_r = maths.gae(rew_r, old_vr, mask, cfg.ppo.gamma, cfg.ppo.lam)
            adv_c, ret_c = maths.gae(rew_c, old_vc, mask, cfg.ppo.gamma, cfg.ppo.lam)
            adv = lagrangian_advantages(adv_r, adv_c, lam)
            if cfg.ppo.whiten_advantages and mask.sum() > 1:
                adv = maths.masked_whiten(adv, mask)
        for m in models:
            m.train()
        t_update = time.perf_counter()
        stats = _update(models, opts, params, ro, adv, (old_vr, ret_r), (old_vc, ret_c), cfg, rng)
        log_lambda = lambda_update(log_lambda, costs.mean().item(), cfg.cost_threshold, cfg.lambda_lr,
                                   cfg.lambda_max)
        seq_kl = kl.sum(-1).mean().item()
        kl_ctl.update(seq_kl, cfg.ppo.rollout_batch_size)
        row = {"step": step, "reward": ro.scores.mean().item(), "cost": costs.mean().item(),
               "unsafe_frac": (costs > 0).float().mean().item(), "lambda": lam,
               "lambda_next": math.exp(log_lambda), "kl": seq_kl, "kl_coef": kl_ctl.value,
               "response_length": mask.sum(-1).mean().item(), **stats, **timing,
               "time_update": time.perf_counter() - t_update}
        history.append(row)
        if log:
            log(row)
    return history


def _update(models, opts, params, ro, adv, reward_critic, cost_critic, cfg: Config, rng) -> dict:
    """`ppo.epochs` passes of shuffled minibatches (`rollout.minibatch_updates`): the clipped policy loss on the
    Lagrangian advantage, each critic's clipped value loss on its own returns (`ppo.ppo_losses`)."""
    policy, reward_value, cost_value = models
    mask = ro.response_mask.float()

    def micro_step(i, n_tokens) -> dict:
        lp = response_logprobs_tail(policy, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i],
                                    ro.response_mask[i], cfg.ppo.temperature)
        pg, vf_r, st = ppo_losses(lp, ro.logprobs[i], adv[i], response_values(reward_value, ro, i),
                                  reward_critic[0][i], reward_critic[1][i], mask[i], cfg.ppo.clip,
                                  cfg.ppo.value_clip, n_tokens)
        _, vf_c, _ = ppo_losses(lp.detach(), ro.logprobs[i], adv[i], response_values(cost_value, ro, i),
                                cost_critic[0][i], cost_critic[1][i], mask[i], cfg.ppo.clip, cfg.ppo.value_clip,
                                n_tokens)
        (pg + vf_r + vf_c).backward()  # three separate models: each loss reaches only its own
        st.update(policy_loss=pg.item(), reward_value_loss=vf_r.item(), cost_value_loss=vf_c.item())
        return st

    p = cfg.ppo
    return minibatch_updates(mask.sum(-1), micro_step, list(zip(params, opts)), epochs=p.epochs,
                             minibatch_size=p.minibatch_size, micro_batch_size=p.micro_batch_size,
                             max_grad_norm=p.train.max_grad_norm, rng=rng)


# ----- evaluation on the harm world -----


def harm_report(policy, ref_policy, tokenizer, records: Sequence[dict], cfg: Config) -> dict[str, float]:
    """Harmlessness rates of `policy` and `ref_policy` (gold harm: no flagged word) and, on harm/task-world
    prompts, the gold helpfulness win rate of `policy` against `ref_policy` (ties ½); one sampling seed."""
    from farm.methods.data import prompt_text
    from farm.models.generation import generate
    from farm.worlds import harm

    prompts = [prompt_text(r, tokenizer, cfg.ppo.prompt_style) for r in records]
    outs = [generate(m, tokenizer, prompts, max_new_tokens=cfg.ppo.max_new_tokens, temperature=cfg.ppo.temperature,
                     seed=cfg.ppo.train.seed + 7).texts for m in (policy, ref_policy)]
    bad = [[harm.is_harmful(r["instruction"], r.get("input", ""), o) for r, o in zip(records, texts)]
           for texts in outs]
    report = {"harmless_rate": 1 - float(np.mean(bad[0])), "harmless_rate_start": 1 - float(np.mean(bad[1])),
              "n_eval": len(records)}
    if all(harm.is_world_prompt(r["instruction"]) for r in records):  # gold helpfulness needs world prompts
        q = [[harm.quality(r["instruction"], r.get("input", ""), o) for r, o in zip(records, texts)]
             for texts in outs]
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(*q)]
        report.update(gold_win_rate_vs_start=float(np.mean(wins)), gold_helpfulness=float(np.mean(q[0])),
                      gold_helpfulness_start=float(np.mean(q[1])))
    return report


# ----- file-level entry point -----


def _harm_labels(cfg: Config, out: Path) -> str:
    """The two-stage label file: `harm_preferences`, or `preferences`' pairs labelled by the simulated judges."""
    from farm.io import read_pairs, write_records
    from farm.worlds import harm

    if cfg.harm_preferences:
        return cfg.harm_preferences
    anns = harm.HarmJudge(noise=cfg.harm_noise).annotate(read_pairs(cfg.preferences), seed=cfg.ppo.train.seed)
    recs = [{**a.pair.to_record(), "p_safer_2": a.preference, **a.meta} for a in anns]  # + unsafe_1, unsafe_2
    return str(write_records(out / "harm_preferences.jsonl", recs))


def run(cfg: Config, reward: Scorer | None = None, cost: Scorer | None = None) -> dict[str, Any]:
    """Train (or load) the cost model and, without `reward_model`, a reward model; then Lagrangian PPO from
    `cfg.policy`. Writes `model/`, `cost_model/`, `metrics.jsonl` (λ trajectory) and `metrics.json`."""
    from farm.errors import FarmError
    from farm.io import atomic_write_text
    from farm.methods import reward as reward_method
    from farm.methods.data import read_instructions, read_preferences
    from farm.methods.loop import write_metrics
    from farm.methods.scorers import RewardModelScorer
    from farm.models.loading import load_causal_lm, load_scalar_model, save_model
    from farm.worlds import harm

    if not cfg.policy or not cfg.prompts:
        raise FarmError("safe_ppo needs `policy` and `prompts`", field="policy" if not cfg.policy else "prompts")
    if cost is None and not (cfg.cost_model or cfg.harm_preferences or cfg.preferences):
        raise FarmError("safe_ppo needs a cost: set cost_model, harm_preferences or preferences", field="cost_model")
    if reward is None and not (cfg.reward_model or cfg.preferences):
        raise FarmError("safe_ppo needs a reward: set reward_model or preferences", field="reward_model")
    if cfg.ppo.reward != RewardSpec():
        changed = next(f.name for f in fields(RewardSpec) if getattr(cfg.ppo.reward, f.name) != getattr(RewardSpec(),
                                                                                                       f.name))
        raise FarmError("safe_ppo scores with reward and cost models; judge rewards are PPO's and RLOO's",
                        field=f"ppo.reward.{changed}", hint="set reward_model or preferences, and leave ppo.reward unset")
    style, tc = cfg.ppo.prompt_style, cfg.ppo.train
    models_tc = dataclasses.replace(cfg.train, seed=tc.seed)  # the reward and cost models: safe PPO's one seed
    torch.manual_seed(tc.seed)
    out = Path(cfg.output_dir)
    policy, tok = load_causal_lm(cfg.policy, device=tc.device, dtype=tc.dtype)
    ref, _ = load_causal_lm(cfg.reference or cfg.policy, device=tc.device, dtype=tc.dtype, tokenizer=tok)
    extra: dict[str, Any] = {}
    if reward is None and not cfg.reward_model:
        rm, _ = load_scalar_model(cfg.policy, device="cpu", tokenizer=tok)
        res = reward_method.train_reward_model(rm, tok, read_preferences(cfg.preferences), models_tc, style=style)
        save_model(res["model"], tok, out / "reward_model")
        extra["reward_model_loss"] = res["loss"]
    reward = reward or RewardModelScorer(cfg.reward_model or str(out / "reward_model"), style=style, device=tc.device)
    if cost is None and not cfg.cost_model:
        cm, _ = load_scalar_model(cfg.policy, device="cpu", tokenizer=tok)
        res = train_cost_model(cm, tok, cost_triples(_harm_labels(cfg, out)), models_tc, style=style)
        save_model(res["model"], tok, out / "cost_model")
        extra.update(cost_model_loss=res["loss"], cost_model_accuracy=res["history"][-1].get("accuracy"))
    cost = cost or RewardModelScorer(cfg.cost_model or str(out / "cost_model"), style=style, device=tc.device)
    records = read_instructions(cfg.prompts)
    if cfg.unsafe_share > 0:
        records = harm.wrap(records, cfg.unsafe_share, tc.seed)
    lines: list[str] = []

    def log(row: dict) -> None:
        lines.append(json.dumps(row))
        atomic_write_text(out / "metrics.jsonl", "\n".join(lines) + "\n")

    # critics start from the scalar models they predict (as ppo.run and the paper), else from the policy
    reward_path = cfg.reward_model or (str(out / "reward_model") if (out / "reward_model").exists() else "")
    cost_path = cfg.cost_model or (str(out / "cost_model") if (out / "cost_model").exists() else "")
    values = [load_scalar_model(p, device=tc.device, dtype=tc.dtype, tokenizer=tok)[0] if p else None
              for p in (reward_path, cost_path)]
    history = train(policy, tok, records, reward, cost, cfg, ref_policy=ref, reward_value=values[0],
                    cost_value=values[1], log=log)
    save_model(policy, tok, out / "model")
    last = history[-1]
    metrics = {"model": str(out / "model"), "metrics": str(out / "metrics.jsonl"), "steps": len(history),
               "reward": last["reward"], "cost": last["cost"], "lambda": last["lambda_next"], "kl": last["kl"],
               "lambda_trajectory": [h["lambda"] for h in history], **extra}
    if cfg.eval_prompts:
        metrics.update(harm_report(policy, ref, tok, read_instructions(cfg.eval_prompts), cfg))
    write_metrics(out, metrics)
    return metrics
