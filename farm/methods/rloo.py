"""RLOO: REINFORCE with a leave-one-out baseline, critic-free (Kool et al. 2019, https://openreview.net/forum?id=r1lgTGL5DE;
Ahmadian et al. 2024, "Back to Basics", https://arxiv.org/abs/2402.14740). Implementation details: docs/methods/rloo.md.

k responses per prompt; response i's advantage is its reward minus the mean reward of the OTHER k-1 responses to
the same prompt. The whole response is one action: the policy-gradient term uses the response's summed
log-prob, with a PPO-style clip on the sequence ratio when a rollout is reused (epochs > 1). This is the maths of
TRL's RLOOTrainer (1.x), so the two can be compared at equal maths (bench/bench_rloo_trl.py).

Choices:
- the KL penalty goes into the reward by default (sequence sum of per-token k1, full strength), as in the paper;
  `kl_in_reward=False` instead adds β·mean k3 to the loss (GRPO-style);
- the same `Rollout` and `collect_rollout` as PPO (temperature-only sampling; log-probs at that temperature);
- the loss of an optimiser step is Σ per-sequence loss / (sequences in the step): micro-batching is invariant.
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
    start_policy_only,
)
from farm.methods.scorers import REWARD_RENAMED, RewardSpec, Scorer
from farm.methods.shard import SINGLE, Shard


@dataclass
class Config:
    """RLOO. `farm train rloo configs/train_rloo.yaml` or `farm.methods.rloo.run(Config(...))`."""

    RENAMED: ClassVar[dict[str, str]] = {**RL_TRAIN_RENAMED, **REWARD_RENAMED}

    policy: str = ""
    """path of the starting policy; also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions file (records with instruction, optional input)"""
    reward: RewardSpec = field(default_factory=RewardSpec)
    """the reward: `reward.model`, `reward.judge` or `reward.function` (as PPO's); or pass a scorer to `train`/`run`"""
    output_dir: str = "runs/rloo"
    """where `model/` and `metrics.jsonl` go"""
    reference: str = ""
    """frozen reference policy ('' = the starting policy)"""
    steps: int = 30
    """rollout batches"""
    prompts_per_step: int = 8
    """distinct prompts per rollout batch"""
    k: int = 4
    """responses per prompt (≥ 2: the baseline of one response is the mean of the other k-1)"""
    minibatch_size: int = 16
    """responses per optimiser step"""
    micro_batch_size: int = 16
    """responses per forward pass"""
    epochs: int = 1
    """passes over each rollout batch (1 = plain REINFORCE: the ratio is 1 and the clip inactive)"""
    kl_coef: float = 0.05
    """β of the KL penalty (TRL's RLOO default 0.05)"""
    kl_in_reward: bool = True
    """True: reward -= β Σ_t k1_t (the paper); False: loss += β · mean k3 over tokens"""
    clip: float = 0.2
    """clip ε on the sequence-level ratio (only matters when epochs > 1)"""
    normalize_advantages: bool = False
    """divide advantages by their batch std after the leave-one-out baseline"""
    temperature: float = 1.0
    """sampling temperature, used for every log-prob too"""
    max_new_tokens: int = 32
    """longest response"""
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
        refuse_unread_train_keys(self.train, "rloo")
        if self.k < 2:
            raise ValueError("k must be at least 2 (the leave-one-out baseline needs another response)")
        n = self.prompts_per_step * self.k
        if n % self.minibatch_size or self.minibatch_size % self.micro_batch_size:
            raise ValueError("prompts_per_step·k must be a multiple of minibatch_size, and that of micro_batch_size")


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """r_i - mean_{j≠i} r_j within each group of k consecutive responses. (N·k,) → (N·k,).

    >>> leave_one_out_advantages(torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]), 3).tolist()
    [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]
    """
    grouped = rewards.float().view(-1, k)  # (N, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)  # (N, k)
    return (grouped - baseline).view(-1)


def rloo_loss(seq_logprobs: torch.Tensor, old_seq_logprobs: torch.Tensor, advantages: torch.Tensor,
              clip: float, n_seqs: float) -> tuple[torch.Tensor, dict]:
    """Clipped REINFORCE on whole responses, summed over this micro-batch and divided by `n_seqs` (sequences in
    the optimiser step). Inputs (b,): summed log-probs now / at sampling, advantages."""
    # Sequence importance ratio ρ (b,): exactly 1 on the first pass over a rollout
    ratio = torch.exp(seq_logprobs - old_seq_logprobs)
    # Policy loss: -min(ρ A, clip(ρ, 1±ε) A), one term per response
    per_seq = -torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    stats = {"clipfrac": ((ratio - 1).abs() > clip).float().mean().item()}
    return per_seq.sum() / n_seqs, stats


def train(policy, tokenizer, records: Sequence[dict], scorer: Scorer, cfg: Config, *, ref_policy=None,
          log: Callable[[dict], None] | None = None,
          on_step: Callable[[int, Any, dict], None] | None = None, resume: dict | None = None) -> list[dict]:
    """`cfg.steps` RLOO iterations on instruction `records`, in place on `policy`. Returns per-step metrics.
    After each step `on_step(step, policy, state)` gets the loop state (optimiser, RNG streams, history); passing
    that `state` back as `resume` (with the policy restored) continues exactly where it stopped."""
    ref_policy, params, opt, shard = start_policy_only(policy, ref_policy, cfg)

    def one_step(step: int, rng: np.random.Generator) -> dict:
        ro, timing, first = group_rollout(policy, ref_policy, tokenizer, records, scorer, cfg, rng, shard)
        t_update = time.perf_counter()
        mask = ro.response_mask.float()
        kl_tok = maths.kl_estimate(ro.logprobs, ro.ref_logprobs, "k1") * mask  # (B, R)
        rewards = ro.scores - cfg.kl_coef * kl_tok.sum(-1) if cfg.kl_in_reward else ro.scores  # (B,)
        adv = leave_one_out_advantages(rewards, cfg.k)
        if cfg.normalize_advantages:  # whitened over the whole batch (every process's rows)
            mean, std = shard.mean_std(adv)
            adv = (adv - mean) / (std + 1e-4)
        sums = update_on_rollout(policy, opt, params, ro, adv, first, cfg, None if first is not None else rng, shard)
        return {"step": step, "reward": shard.mean(ro.scores), "kl": shard.mean(kl_tok.sum(-1)),
                "rlhf_reward": shard.mean(rewards), "response_length": shard.mean(mask.sum(-1)), **sums,
                **timing, "time_update": time.perf_counter() - t_update}

    return iterate(cfg, "rloo", {"opt": opt}, one_step, resume=resume, log=log,
                   on_step=(lambda step, state: on_step(step, policy, state)) if on_step else None)


def update_on_rollout(policy, opt, params, ro, adv: torch.Tensor, first, cfg: Config,
                      rng: np.random.Generator | None, shard: Shard = SINGLE) -> dict:
    """`cfg.epochs` passes of minibatches (`rollout.minibatch_updates`, one unit per sequence) of the clipped
    sequence-level loss. `first` = (log-probs, entropy) of the on-policy path's single training forward (then `rng`
    is None and the rollout keeps its order: that forward already holds every row)."""
    mask = ro.response_mask.float()
    old_seq = (ro.logprobs * mask).sum(-1)  # (B,)

    def micro_step(i, n_seqs) -> dict:
        lp, ent = first if first is not None else response_logprobs_tail(
            policy, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i], ro.response_mask[i],
            cfg.temperature, return_entropy=True)
        loss, st = rloo_loss((lp * mask[i]).sum(-1), old_seq[i], adv[i], cfg.clip, n_seqs)
        if not cfg.kl_in_reward:  # KL as a loss: β · mean over this micro-batch's tokens, weighted
            k3 = maths.kl_estimate(lp, ro.ref_logprobs[i], "k3")
            loss = loss + cfg.kl_coef * maths.masked_mean(k3, mask[i]) * len(i) / float(n_seqs)
        loss.backward()
        return {"loss": loss.item(), "entropy": maths.masked_mean(ent.detach(), mask[i]).item(), **st}

    return minibatch_updates(torch.ones(len(ro), device=mask.device), micro_step, [(params, opt)], epochs=cfg.epochs,
                             minibatch_size=local_minibatch(cfg, shard), micro_batch_size=cfg.micro_batch_size,
                             max_grad_norm=cfg.train.max_grad_norm, rng=rng, shard=shard)


def run(cfg: Config, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """Read `cfg.prompts`, train from `cfg.policy` against `scorer` (default: `cfg.reward`), write `model/` and
    `metrics.jsonl` under `cfg.output_dir`; with `save_every`, a re-run resumes from `checkpoint/`."""
    return run_policy_only(cfg, "rloo", train, scorer, annotator)
