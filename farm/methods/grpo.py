"""GRPO: group-relative policy optimisation, critic-free (Shao et al. 2024, DeepSeekMath,
https://arxiv.org/abs/2402.03300), with the well-known fixes as options: DAPO's token-level normalisation,
clip-higher and dynamic sampling (Yu et al. 2025, https://arxiv.org/abs/2503.14476), Dr. GRPO's constant
normaliser and no std scaling (Liu et al. 2025, https://arxiv.org/abs/2503.20783), GSPO's sequence-level ratio
(Zheng et al. 2025, https://arxiv.org/abs/2507.18071). Implementation details: docs/methods/grpo.md.

k responses per prompt; response i's advantage is its reward minus its group's mean reward, optionally divided by
the group's (or the batch's) std. Every response token carries that advantage in a PPO-clipped objective.

Choices (each on purpose):
- the rollout, the on-policy single forward, the minibatch loop and the outer loop are the RL floor's
  (`rollout.group_rollout`, `minibatch_updates`, `iterate`), the same code RLOO runs;
- a loss normalisation is a small function in `NORMALISATIONS`, never an `elif`; each divides by a quantity of the
  WHOLE minibatch (sequences, tokens, or sequences × max_new_tokens), so gradient accumulation and processes do not
  change the update (tests/test_methods_grpo.py: 1×8 = 8×1);
- KL to the reference: a k3 term in the loss (the paper; default) or −β Σ_t k1 in the reward (`kl_in_reward`);
- rewards from a reward model, a judge's verdict or a function (`reward:`, as PPO and RLOO) or any `Scorer`.
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
    refuse_unread_train_keys,
    rl_train_config,
)
from farm.methods.rollout import (
    group_rollout,
    iterate,
    local_minibatch,
    minibatch_updates,
    response_logprobs_tail,
    run_policy_only,
    select_rows,
    start_policy_only,
)
from farm.methods.scorers import REWARD_RENAMED, RewardSpec, Scorer
from farm.methods.shard import SINGLE, Shard

# ----- loss normalisations: Σ of a micro-batch's per-token losses → its share of the minibatch loss -----


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor, n_units: torch.Tensor, max_len: int) -> torch.Tensor:
    """GRPO (the paper): each response's mean over its tokens, averaged over the minibatch's responses.
    per_token, mask (b, R); n_units = responses in the minibatch. Short responses weigh each token more."""
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / n_units


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, n_units: torch.Tensor, max_len: int) -> torch.Tensor:
    """DAPO: every token of the minibatch weighs the same; n_units = the minibatch's real tokens."""
    return (per_token * mask).sum() / n_units


def constant_mean(per_token: torch.Tensor, mask: torch.Tensor, n_units: torch.Tensor, max_len: int) -> torch.Tensor:
    """Dr. GRPO: a constant normaliser, responses in the minibatch × `max_new_tokens` (no length bias)."""
    return (per_token * mask).sum() / (n_units * max_len)


@dataclass(frozen=True)
class Normalisation:
    """How a per-token loss becomes the minibatch's loss."""

    fn: Callable[..., torch.Tensor]
    """(per_token (b, R), mask (b, R), n_units of the minibatch, max_new_tokens) → this micro-batch's share"""
    token_units: bool
    """a row counts its real tokens in `n_units` (True) or 1 (False)"""


NORMALISATIONS: dict[str, Normalisation] = {
    "grpo": Normalisation(sequence_mean, token_units=False),
    "dapo": Normalisation(token_mean, token_units=True),
    "dr_grpo": Normalisation(constant_mean, token_units=False),
}


@dataclass
class Config:
    """GRPO. `farm train grpo --config configs/train_grpo.yaml` or `farm.methods.grpo.run(Config(...))`. Defaults fit
    a tiny model on CPU (`farm compare`)."""

    RENAMED: ClassVar[dict[str, str]] = {**RL_TRAIN_RENAMED, **REWARD_RENAMED}

    policy: str = ""
    """path of the starting policy; also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions file (records with instruction, optional input)"""
    reward: RewardSpec = field(default_factory=RewardSpec)
    """the reward: `reward.model`, `reward.judge` or `reward.function` (as PPO's); or pass a scorer to `train`/`run`"""
    output_dir: str = "runs/grpo"
    """where `model/`, `metrics.jsonl` and the resumable `checkpoint/` go"""
    reference: str = ""
    """frozen reference policy ('' = the starting policy)"""
    steps: int = 30
    """rollout batches"""
    prompts_per_step: int = 8
    """distinct prompts per rollout batch"""
    k: int = 4
    """responses per prompt, the group (≥ 2; DeepSeekMath: 64)"""
    minibatch_size: int = 32
    """responses per optimiser step"""
    micro_batch_size: int = 32
    """responses per forward pass"""
    epochs: int = 1
    """passes over each rollout batch (GRPO's μ; 1 = on-policy: the ratio is 1 and the clip inactive)"""
    loss: str = "dapo"
    """a normalisation of NORMALISATIONS: grpo (per-response mean), dapo (per token), dr_grpo (constant)"""
    scale_rewards: str = "group"
    """divide advantages by the std of the group (GRPO), of the batch, or none (Dr. GRPO)"""
    clip: float = 0.2
    """ε_low of the ratio clip"""
    clip_high: float | None = None
    """ε_high (clip-higher; DAPO: 0.28); None = `clip`"""
    importance: str = "token"
    """token (GRPO) or sequence (GSPO: one ratio per response, exp of its mean per-token log-ratio)"""
    dynamic_sampling: bool = False
    """drop the groups whose rewards are all equal (zero advantage, no signal) before the update (DAPO)"""
    kl_coef: float = 0.05
    """β of the KL to the reference (DeepSeekMath: 0.04; DAPO and Dr. GRPO: 0)"""
    kl_in_reward: bool = False
    """False: loss += β · k3 per token (the paper); True: reward −= β Σ_t k1 (as RLOO)"""
    temperature: float = 1.0
    """sampling temperature, used for every log-prob too"""
    max_new_tokens: int = 32
    """longest response (and Dr. GRPO's constant)"""
    max_prompt_tokens: int = 192
    """prompts are cut from the left to this many tokens"""
    missing_eos_score: float | None = None
    """score for responses without EOS (None = their own score)"""
    prompt_style: str = "alpaca"
    """alpaca or chat"""
    save_every: int = 0
    """with k > 0: every k steps a resumable `checkpoint/` (policy + loop state); re-running continues from it"""
    train: TrainConfig = field(default_factory=lambda: rl_train_config(lr=3e-4))
    """optimiser and run settings: lr (tiny models ~3e-4; 7B ~1e-6), AdamW (torch defaults, ε 1e-5),
    max_grad_norm, seed (prompt order and sampling), device, dtype, progress"""

    def __post_init__(self):
        refuse_unread_train_keys(self.train, "grpo")
        if self.k < 2:
            raise ValueError("k must be at least 2 (a group-relative advantage needs another response)")
        if self.loss not in NORMALISATIONS:
            raise ValueError(f"loss must be one of {list(NORMALISATIONS)}, got {self.loss!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be group, batch or none, got {self.scale_rewards!r}")
        if self.importance not in ("token", "sequence"):
            raise ValueError(f"importance must be token or sequence, got {self.importance!r}")


# ----- the maths -----


def group_advantages(rewards: torch.Tensor, k: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """r_i − mean of its group of k consecutive responses, divided by the group's std (`group`), the batch's
    (`batch`) or 1 (`none`); std with Bessel's correction, + eps. (N·k,) → (N·k,).

    >>> group_advantages(torch.tensor([1.0, 2.0, 6.0, 3.0, 3.0, 3.0]), 3, "none").tolist()
    [-2.0, -1.0, 3.0, 0.0, 0.0, 0.0]
    """
    grouped = rewards.float().view(-1, k)  # (N, k)
    adv = grouped - grouped.mean(1, keepdim=True)  # (N, k)
    if scale == "group":
        adv = adv / (grouped.std(1, keepdim=True) + eps)
    elif scale == "batch":
        adv = adv / (rewards.float().std() + eps)
    return adv.view(-1)


def informative_groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Row indices of the groups whose k scores are not all equal (DAPO's dynamic sampling keeps these).

    >>> informative_groups(torch.tensor([1.0, 1.0, 0.0, 2.0, 2.0, 2.0]), 3).tolist()
    [0, 1, 2]
    """
    grouped = scores.view(-1, k)
    keep = (grouped != grouped[:, :1]).any(1)  # (N,)
    return torch.arange(len(scores), device=scores.device).view(-1, k)[keep].view(-1)


def grpo_token_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_low: float, clip_high: float,
                    sequence_ratio: bool = False) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate per token, −min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A), with A the response's
    advantage on each of its tokens. ρ per token, or (GSPO) one per response = exp(mean_t log ρ_t).
    logprobs, old_logprobs, mask (b, R); advantages (b,) → per-token loss (b, R) and stats."""
    log_ratio = logprobs - old_logprobs  # (b, R)
    if sequence_ratio:  # GSPO: the response's geometric-mean ratio, on every token
        log_ratio = (maths.masked_sum(log_ratio, mask, -1) / mask.sum(-1).clamp(min=1)).unsqueeze(-1)  # (b, 1)
    ratio = torch.exp(log_ratio)
    A = advantages.unsqueeze(-1)  # (b, 1)
    # Policy loss: −min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A)
    per_token = -torch.minimum(ratio * A, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * A)
    per_token = per_token.expand_as(mask)
    with torch.no_grad():
        r = ratio.expand_as(mask)
        stats = {"clipfrac_low": maths.masked_mean(((r < 1 - clip_low) & (A < 0)).float(), mask).item(),
                 "clipfrac_high": maths.masked_mean(((r > 1 + clip_high) & (A > 0)).float(), mask).item()}
    return per_token, stats


# ----- training -----


def train(policy, tokenizer, records: Sequence[dict], scorer: Scorer, cfg: Config, *, ref_policy=None,
          log: Callable[[dict], None] | None = None,
          on_step: Callable[[int, Any, dict], None] | None = None, resume: dict | None = None) -> list[dict]:
    """`cfg.steps` GRPO iterations on instruction `records`, in place on `policy`. Returns per-step metrics.
    After each step `on_step(step, policy, state)` gets the loop state; passing it back as `resume` (with the
    policy restored) continues exactly where it stopped."""
    ref_policy, params, opt, shard = start_policy_only(policy, ref_policy, cfg)

    def one_step(step: int, rng: np.random.Generator) -> dict:
        ro, timing, first = group_rollout(policy, ref_policy, tokenizer, records, scorer, cfg, rng, shard)
        t_update = time.perf_counter()
        mask = ro.response_mask.float()
        kl_seq = (maths.kl_estimate(ro.logprobs, ro.ref_logprobs, "k1") * mask).sum(-1)  # (B,)
        rewards = ro.scores - cfg.kl_coef * kl_seq if cfg.kl_in_reward else ro.scores  # (B,)
        if cfg.scale_rewards == "batch" and shard.world > 1:  # the std of every process's rewards together
            adv = group_advantages(rewards, cfg.k, "none") / (shard.mean_std(rewards.float())[1] + 1e-4)
        else:
            adv = group_advantages(rewards, cfg.k, cfg.scale_rewards)
        row = {"step": step, "reward": shard.mean(ro.scores), "kl": shard.mean(kl_seq),
               "reward_std": shard.mean(ro.scores.view(-1, cfg.k).std(1)),
               "response_length": shard.mean(mask.sum(-1))}
        keep = informative_groups(ro.scores, cfg.k) if cfg.dynamic_sampling else None
        if keep is None:
            row["kept_frac"] = 1.0
        else:  # kept rows / rows, over every process
            kept, rows = shard.all_sum(torch.tensor([float(len(keep)), float(len(ro))], dtype=torch.float64)).tolist()
            row["kept_frac"] = kept / rows
        if keep is not None and len(keep) < len(ro):
            if first is not None:  # the single forward no longer matches the rows: drop it
                first = (first[0][keep], first[1][keep])
            ro, adv = select_rows(ro, keep), adv[keep]
        if len(ro) or shard.world > 1:  # every process joins each step's collectives, rows or not
            row.update(update_on_rollout(policy, opt, params, ro, adv, first, cfg,
                                         None if first is not None else rng, shard))
        return {**row, **timing, "time_update": time.perf_counter() - t_update}

    return iterate(cfg, "grpo", {"opt": opt}, one_step, resume=resume, log=log,
                   on_step=(lambda step, state: on_step(step, policy, state)) if on_step else None)


def update_on_rollout(policy, opt, params, ro, adv: torch.Tensor, first, cfg: Config,
                      rng: np.random.Generator | None, shard: Shard = SINGLE) -> dict:
    """`cfg.epochs` passes of minibatches (`rollout.minibatch_updates`) of the clipped per-token loss (+ β·k3 unless
    the KL is in the reward), normalised by `NORMALISATIONS[cfg.loss]` over the whole minibatch. `first` = the
    on-policy path's single training forward (then `rng` is None and the rows keep their order)."""
    mask = ro.response_mask.float()
    norm = NORMALISATIONS[cfg.loss]
    clip_high = cfg.clip if cfg.clip_high is None else cfg.clip_high

    def micro_step(i, n_units) -> dict:
        lp, ent = first if first is not None else response_logprobs_tail(
            policy, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i], ro.response_mask[i],
            cfg.temperature, return_entropy=True)
        if first is not None:
            lp, ent = lp[i], ent[i]
        per_token, st = grpo_token_loss(lp, ro.logprobs[i], adv[i], mask[i], cfg.clip, clip_high,
                                        cfg.importance == "sequence")
        if not cfg.kl_in_reward and cfg.kl_coef:  # KL as a loss: β · k3 on every token, normalised as the loss
            per_token = per_token + cfg.kl_coef * maths.kl_estimate(lp, ro.ref_logprobs[i], "k3")
        loss = norm.fn(per_token, mask[i], n_units, cfg.max_new_tokens)
        loss.backward()
        return {"loss": loss.item(), "entropy": maths.masked_mean(ent.detach(), mask[i]).item(), **st}

    units = mask.sum(-1) if norm.token_units else torch.ones(len(ro), device=mask.device)
    return minibatch_updates(units, micro_step, [(params, opt)], epochs=cfg.epochs,
                             minibatch_size=local_minibatch(cfg, shard), micro_batch_size=cfg.micro_batch_size,
                             max_grad_norm=cfg.train.max_grad_norm, rng=rng, shard=shard)


def run(cfg: Config, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """Read `cfg.prompts`, train from `cfg.policy` against `scorer` (default: `cfg.reward`), write `model/` and
    `metrics.jsonl` under `cfg.output_dir`; with `save_every`, a re-run resumes from `checkpoint/`."""
    return run_policy_only(cfg, "grpo", train, scorer, annotator)
