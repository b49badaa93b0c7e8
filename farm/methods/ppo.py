"""PPO for language models with a learned value model and a per-token KL penalty (Ziegler et al. 2019,
https://arxiv.org/abs/1909.08593; Stiennon et al. 2020; Ouyang et al. 2022; AlpacaFarm, Dubois et al. 2023,
https://arxiv.org/abs/2305.14387). Implementation details, numbered: docs/methods/ppo.md.

Departures and choices (each on purpose):
- the value model is a SEPARATE scalar model (`load_scalar_model`), optionally initialised from the reward model,
  with its own optimiser; no shared trunk, so the value loss never perturbs the policy;
- the KL penalty is in the reward, per token, at FULL strength (r_t = -β·KL_t, plus the score on the last real
  token), estimated in fp32 with k1 (default) or k3 (`maths.kl_estimate`);
- old log-probs are recomputed by a training-mode-free forward with the SAME temperature the sampler used, and
  sampling has no top-k/top-p, so the importance ratio on the first minibatch is exactly 1 (tested);
- the per-token loss is normalised by the number of real tokens in the whole MINIBATCH (not per micro-batch),
  so gradient accumulation gives the same gradient as one big batch (tested 1×8 = 8×1);
- a response without EOS within `max_new_tokens` can get a fixed score `missing_eos_score` (None = keep its score);
- the adaptive KL controller is Ziegler et al.'s proportional one, updated once per rollout batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from farm.methods import maths
from farm.methods.loop import (
    RL_TRAIN_RENAMED,
    TrainConfig,
    make_optimizer,
    refuse_unread_train_keys,
    rl_train_config,
)
from farm.methods.rollout import (
    KLController,
    collect_rollout,
    disable_dropout,
    iterate,
    minibatch_updates,
    response_logprobs_tail,
    response_values,
    start_run,
    value_model_from_policy,
)
from farm.methods.scorers import REWARD_RENAMED, RewardSpec, Scorer
from farm.methods.shard import SINGLE, Shard, current_shard
from farm.types import Rollout


@dataclass
class Config:
    """PPO. `farm train ppo --config configs/train_ppo.yaml` or `farm.methods.ppo.run(Config(...))`. Defaults fit
    a tiny model on CPU (`farm compare`); each docstring says what a 7B run used (AlpacaFarm)."""

    RENAMED: ClassVar[dict[str, str]] = {**RL_TRAIN_RENAMED, **REWARD_RENAMED}

    policy: str = ""
    """path of the starting policy (the SFT model); also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions file (records with instruction, optional input) used as RL prompts"""
    reward: RewardSpec = field(default_factory=RewardSpec)
    """the reward: `reward.model` (a reward model), `reward.judge` (an annotator's verdict against the reference
    policy's answer) or `reward.function`; or pass a scorer to `train`/`run`"""
    output_dir: str = "runs/ppo"
    """where `model/`, `metrics.jsonl`, `checkpoints/step_k/` and the resumable `checkpoint/` go"""
    reference: str = ""
    """path of the frozen reference policy ('' = the starting policy)"""
    value_model: str = ""
    """initialisation of the value model ('' = the reward model if given, else the policy's backbone)"""
    steps: int = 40
    """rollout batches (PPO iterations)"""
    rollout_batch_size: int = 32
    """prompts sampled per iteration (one response each; AlpacaFarm 7B: 512)"""
    minibatch_size: int = 16
    """rollouts per optimiser step (a divisor of rollout_batch_size, or the last minibatch is smaller)"""
    micro_batch_size: int = 16
    """rollouts per forward pass (gradient accumulation = minibatch / micro)"""
    epochs: int = 2
    """passes over each rollout batch (AlpacaFarm: 2)"""
    value_lr: float = 1e-3
    """value model learning rate (the policy's is `train.lr`)"""
    kl_coef: float = 0.05
    """initial β of the per-token KL penalty (AlpacaFarm 7B: 0.0067–0.02)"""
    adaptive_kl: bool = False
    """adapt β towards `kl_target` (Ziegler et al.); False = fixed β"""
    kl_target: float = 6.0
    """target sequence KL in nats for the adaptive controller"""
    kl_horizon: int = 10000
    """horizon of the adaptive controller in rollouts"""
    kl_estimator: str = "k1"
    """per-token KL estimator in the reward: k1 (log ratio; unbiased) or k3 (non-negative)"""
    gamma: float = 1.0
    """discount"""
    lam: float = 0.95
    """GAE λ"""
    clip: float = 0.2
    """policy ratio clip ε"""
    value_clip: float = 0.2
    """value clip ε (around the rollout's values)"""
    whiten_advantages: bool = True
    """normalise advantages to mean 0, std 1 over the rollout batch's real tokens"""
    temperature: float = 1.0
    """sampling temperature; the SAME temperature is used for every log-prob (old, new, reference)"""
    max_new_tokens: int = 32
    """longest response"""
    max_prompt_tokens: int = 192
    """prompts are cut from the left to this many tokens"""
    missing_eos_score: float | None = None
    """score given to responses that hit max_new_tokens without EOS (None = their own score)"""
    prompt_style: str = "alpaca"
    """alpaca or chat"""
    save_every: int = 10
    """every k iterations: a policy snapshot in checkpoints/step_k (over-optimisation curves) and the resumable
    `checkpoint/` (0 = only the final model)"""
    train: TrainConfig = field(default_factory=lambda: rl_train_config(lr=1e-4))
    """policy optimiser and run settings: lr (tiny models ~1e-4; AlpacaFarm 7B 1e-5), AdamW (torch defaults, ε 1e-5),
    max_grad_norm (each model), seed (prompt order, sampling, initialisation), device, dtype, progress"""

    def __post_init__(self):
        refuse_unread_train_keys(self.train, "ppo")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if min(self.rollout_batch_size, self.minibatch_size, self.micro_batch_size) < 1:
            raise ValueError("rollout_batch_size, minibatch_size and micro_batch_size must be >= 1")
        # sizes that do not divide leave a smaller last minibatch / micro-batch: each minibatch's loss is normalised
        # by its own tokens, so the update stays independent of the micro-batch split


# ----- the loss -----


def ppo_losses(logprobs, old_logprobs, advantages, values, old_values, returns, mask, clip: float,
               value_clip: float, n_tokens: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Clipped policy and value losses on one micro-batch, each normalised by `n_tokens`, the real tokens in the
    whole minibatch (so micro-batching leaves the gradient unchanged). All inputs (b, R)."""
    share = mask.sum() / n_tokens  # this micro-batch's share of the minibatch's tokens
    # Policy loss: -min(ρ A, clip(ρ, 1±ε) A), mean over the minibatch's real tokens
    pg_loss, stats = maths.clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip)
    # Value loss: ½ max((V - R)², (clip(V, V_old ± ε) - R)²), same normalisation
    vf_loss = maths.clipped_value_loss(values, old_values, returns, mask, value_clip)
    with torch.no_grad():
        stats["vf_clipfrac"] = maths.masked_mean(((values - old_values).abs() > value_clip).float(), mask).item()
    return pg_loss * share, vf_loss * share, stats


# ----- training -----


def _whiten(x: torch.Tensor, mask: torch.Tensor, shard: Shard = SINGLE) -> torch.Tensor:
    """Advantages whitened over every process's real tokens (left as they are with fewer than two)."""
    return shard.masked_whiten(x, mask.float()) if shard.all_sum(mask.sum()) > 1 else x


def train(policy, tokenizer, records: Sequence[dict], scorer: Scorer, cfg: Config, *, ref_policy=None,
          value_model=None, log: Callable[[dict], None] | None = None,
          on_step: Callable[[int, Any, Any, dict], None] | None = None, resume: dict | None = None) -> list[dict]:
    """Run `cfg.steps` PPO iterations on instruction `records` (instruction, input; or a verbatim `prompt`), in
    place on `policy` and `value_model`. `ref_policy` defaults to a frozen copy of the starting policy;
    `value_model` to a scalar model on the policy's backbone (head at zero). Returns one metrics dict per
    iteration (also sent to `log`). After each iteration `on_step(step, policy, value_model, state)` gets the
    loop state (optimisers, KL coefficient, RNG streams, history); passing that `state` back as `resume` (with
    the models restored) continues the run exactly where it stopped."""
    import copy

    torch.manual_seed(cfg.train.seed)
    ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    ref_policy.requires_grad_(False).eval()
    if value_model is None:
        value_model = value_model_from_policy(policy)
    disable_dropout(policy, value_model)
    pol_params = [p for p in policy.parameters() if p.requires_grad]
    val_params = [p for p in value_model.parameters() if p.requires_grad]
    pol_opt = make_optimizer(pol_params, cfg.train)
    val_opt = make_optimizer(val_params, cfg.train, lr=cfg.value_lr)
    kl_ctl = KLController(cfg.kl_coef, cfg.kl_target if cfg.adaptive_kl else None, cfg.kl_horizon)
    if resume:
        kl_ctl.value = resume["kl_coef"]
    shard = current_shard(cfg.train.device)  # one process unless under `accelerate launch` (farm/methods/shard.py)
    shard.local(cfg.rollout_batch_size, "rollout_batch_size")
    shard.local(cfg.minibatch_size, "minibatch_size")

    def one_step(step: int, rng: np.random.Generator) -> dict:
        chosen = rng.choice(len(records), cfg.rollout_batch_size, replace=len(records) < cfg.rollout_batch_size)
        chosen, seed = shard.local_draw(chosen, int(rng.integers(2**62)))  # this process's prompts and stream
        batch = [records[i] for i in chosen]
        ro, timing = collect_rollout(policy, ref_policy, tokenizer, batch, scorer, style=cfg.prompt_style,
                                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                     max_prompt_tokens=cfg.max_prompt_tokens, seed=seed,
                                     missing_eos_score=cfg.missing_eos_score)
        t_update = time.perf_counter()
        mask = ro.response_mask.float()
        with torch.no_grad():
            value_model.eval()
            old_values = response_values(value_model, ro) * mask  # (B, R)
            value_model.train()
            kl = maths.kl_estimate(ro.logprobs, ro.ref_logprobs, cfg.kl_estimator) * mask  # (B, R) fp32
            rewards = -kl_ctl.value * kl + maths.terminal_rewards(ro.scores, ro.response_mask)  # (B, R)
            advantages, returns = maths.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = _whiten(advantages, mask, shard)
        stats = update_on_rollout(policy, value_model, pol_opt, val_opt, pol_params, val_params, ro,
                                  advantages, returns, old_values, cfg, rng, shard)
        seq_kl = shard.mean(kl.sum(-1))
        row = {"step": step, "reward": shard.mean(ro.scores), "kl": seq_kl,
               "non_score_reward": shard.mean((-kl_ctl.value * kl).sum(-1)), "kl_coef": kl_ctl.value,
               "response_length": shard.mean(mask.sum(-1)),
               "no_eos_frac": 1.0 - shard.mean(_has_eos(ro, tokenizer)),
               **stats, **timing, "time_update": time.perf_counter() - t_update}
        kl_ctl.update(seq_kl, cfg.rollout_batch_size)
        return row

    return iterate(cfg, "ppo", {"pol_opt": pol_opt, "val_opt": val_opt}, one_step, resume=resume, log=log,
                   on_step=(lambda step, state: on_step(step, policy, value_model, state)) if on_step else None,
                   extra_state=lambda: {"kl_coef": kl_ctl.value})


def _has_eos(ro: Rollout, tokenizer) -> torch.Tensor:
    last = maths.last_token_index(ro.response_mask)
    return (ro.response_ids[torch.arange(len(ro)), last] == tokenizer.eos_token_id).float()


def update_on_rollout(policy, value_model, pol_opt, val_opt, pol_params, val_params, ro: Rollout,
                      advantages, returns, old_values, cfg: Config, rng: np.random.Generator,
                      shard: Shard = SINGLE) -> dict:
    """`cfg.epochs` passes of shuffled minibatches over one rollout batch (with `shard`: this process's rows, its
    share of each minibatch). Returns averaged statistics."""
    mask = ro.response_mask.float()

    def micro_step(i, n_tokens) -> dict:
        lp, ent = response_logprobs_tail(policy, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i],
                                          ro.response_mask[i], cfg.temperature, return_entropy=True)
        values = response_values(value_model, ro, i)
        pg, vf, st = ppo_losses(lp, ro.logprobs[i], advantages[i], values, old_values[i], returns[i],
                                mask[i], cfg.clip, cfg.value_clip, n_tokens)
        (pg + vf).backward()  # separate models: each loss only reaches its own parameters
        st.update(policy_loss=pg.item(), value_loss=vf.item(),
                  entropy=maths.masked_mean(ent.detach(), mask[i]).item())
        return st

    return minibatch_updates(mask.sum(-1), micro_step, ((pol_params, pol_opt), (val_params, val_opt)),
                             epochs=cfg.epochs, minibatch_size=shard.local(cfg.minibatch_size, "minibatch_size"),
                             micro_batch_size=cfg.micro_batch_size, max_grad_norm=cfg.train.max_grad_norm, rng=rng,
                             shard=shard)


# ----- file-level entry point -----


def run(cfg: Config, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """Read `cfg.prompts`, train from `cfg.policy` against `scorer` (default: `cfg.reward`), write `model/`,
    `metrics.jsonl` (per-iteration reward, KL, ... for over-optimisation curves) under `cfg.output_dir`. With
    `save_every`, policy snapshots go to `checkpoints/step_k` and a resumable `checkpoint/` (policy, value model,
    loop state) is kept: re-running the same command continues from it."""
    from farm.models.loading import load_scalar_model, save_model

    r = start_run(cfg, "ppo", ("policy", "value"), scorer, annotator)
    tc = cfg.train
    value_init = str(r.checkpoint / "value") if r.resume else (cfg.value_model or cfg.reward.model)
    value_model = (load_scalar_model(value_init, device=tc.device, dtype=tc.dtype, tokenizer=r.tokenizer)[0]
                   if value_init else None)

    def on_step(step: int, model, value, state: dict) -> None:
        if cfg.save_every and step % cfg.save_every == 0:
            if r.shard.is_main:
                save_model(model, r.tokenizer, r.out / "checkpoints" / f"step_{step}")  # for over-optimisation curves
            r.save(step, state, policy=model, value=value)  # resumable

    history = train(r.policy, r.tokenizer, r.records, r.scorer, cfg, ref_policy=r.ref, value_model=value_model,
                    log=r.log, on_step=on_step, resume=r.resume)
    return r.finish(history)
