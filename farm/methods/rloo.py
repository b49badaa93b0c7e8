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

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from farm.methods import maths
from farm.methods.common import Scorer, loop_checkpoint, save_loop_checkpoint
from farm.methods.ppo import collect_rollout, disable_dropout, response_logprobs_tail


@dataclass
class Config:
    """RLOO. `farm train rloo configs/train_rloo.yaml` or `farm.methods.rloo.run(Config(...))`."""

    policy: str = ""
    """path of the starting policy; also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions file (records with instruction, optional input)"""
    reward_model: str = ""
    """path of the reward model; or pass a scorer to `train`/`run`"""
    reward_judge: str = ""
    """an annotator (judge folder, pool, or simulated judge name such as gpt4_like) whose preference for each
    response over the reference policy's greedy answer is the reward (`common.JudgeScorer`, in [0, 1]); used
    instead of `reward_model`. One judge request per response, cached"""
    judge_length_penalty: float = 0.0
    """λ: a `reward_judge` reward loses λ per 10 characters the response is longer than the reference answer"""
    judge_both_orders: bool = False
    """ask the `reward_judge` about each response in both orders and average (2 requests per response)"""
    judge_reference: str = "greedy"
    """what a `reward_judge` compares each response with: the reference policy's greedy answer (asked once per
    prompt) or a fresh `sample` of it at `temperature` for every batch (the judge cannot be gamed on one pair)"""
    output_dir: str = "runs/rloo"
    """where `model/` and `metrics.jsonl` go"""
    reference: str = ""
    """frozen reference policy ('' = the starting policy)"""
    steps: int = 30
    """rollout batches"""
    prompts_per_step: int = 4
    """distinct prompts per rollout batch"""
    k: int = 4
    """responses per prompt (≥ 2: the baseline of one response is the mean of the other k-1)"""
    minibatch_size: int = 16
    """responses per optimiser step"""
    micro_batch_size: int = 16
    """responses per forward pass"""
    epochs: int = 1
    """passes over each rollout batch (1 = plain REINFORCE: the ratio is 1 and the clip inactive)"""
    lr: float = 1e-3
    """learning rate (tiny models ~1e-3; 7B ~1e-6)"""
    max_grad_norm: float = 1.0
    """gradient clipping (0 = off)"""
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
    seed: int = 0
    """seed for prompt order and sampling"""
    device: str = "auto"
    """cpu, cuda or auto"""
    dtype: str = "auto"
    """fp32 on CPU, bf16 on capable GPUs"""
    progress: bool = True
    """progress bar (only on a TTY)"""

    def __post_init__(self):
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
    import copy

    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    ref_policy.requires_grad_(False).eval()
    disable_dropout(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    if resume:
        opt.load_state_dict(resume["opt"])
        rng.bit_generator.state = resume["rng"]
        torch.set_rng_state(resume["torch_rng"])
        history = list(resume["history"])
    for step in tqdm(range(len(history) + 1, cfg.steps + 1), desc="rloo", disable=not cfg.progress, leave=False):
        chosen = rng.choice(len(records), cfg.prompts_per_step, replace=len(records) < cfg.prompts_per_step)
        batch = [records[i] for i in chosen for _ in range(cfg.k)]  # k consecutive copies per prompt
        # one rollout, one optimiser step, no micro-batching: the training forward IS the behaviour forward (ratio
        # exactly 1), so the separate no-grad pass TRL does is skipped — same maths, one policy forward fewer
        on_policy = cfg.epochs == 1 and cfg.micro_batch_size == cfg.minibatch_size == len(batch)
        ro, timing = collect_rollout(policy, ref_policy, tokenizer, batch, scorer, style=cfg.prompt_style,
                                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                     max_prompt_tokens=cfg.max_prompt_tokens, seed=int(rng.integers(2**62)),
                                     missing_eos_score=cfg.missing_eos_score, behaviour_logprobs=not on_policy)
        t_update = time.perf_counter()
        mask = ro.response_mask.float()
        first = None
        if on_policy:
            first = response_logprobs_tail(policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask,
                                           cfg.temperature, return_entropy=True)
            ro.logprobs = first[0].detach()
        kl_tok = maths.kl_estimate(ro.logprobs, ro.ref_logprobs, "k1") * mask  # (B, R)
        rewards = ro.scores - cfg.kl_coef * kl_tok.sum(-1) if cfg.kl_in_reward else ro.scores  # (B,)
        adv = leave_one_out_advantages(rewards, cfg.k)
        if cfg.normalize_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-4)
        old_seq = (ro.logprobs * mask).sum(-1)  # (B,)
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(cfg.epochs):
            order = (torch.arange(len(ro)) if on_policy else torch.as_tensor(rng.permutation(len(ro)))).to(mask.device)
            for s in range(0, len(ro), cfg.minibatch_size):
                mb = order[s:s + cfg.minibatch_size]
                for m in range(0, len(mb), cfg.micro_batch_size):
                    i = mb[m:m + cfg.micro_batch_size]
                    lp, ent = first if first is not None else response_logprobs_tail(
                        policy, ro.prompt_ids[i], ro.prompt_mask[i], ro.response_ids[i], ro.response_mask[i],
                        cfg.temperature, return_entropy=True)
                    loss, st = rloo_loss((lp * mask[i]).sum(-1), old_seq[i], adv[i], cfg.clip, len(mb))
                    if not cfg.kl_in_reward:  # KL as a loss: β · mean over this micro-batch's tokens, weighted
                        k3 = maths.kl_estimate(lp, ro.ref_logprobs[i], "k3")
                        loss = loss + cfg.kl_coef * maths.masked_mean(k3, mask[i]) * len(i) / len(mb)
                    loss.backward()
                    w = len(i) / len(mb)
                    for key, v in {"loss": loss.item() / w, "entropy": maths.masked_mean(ent.detach(), mask[i]).item(),
                                   **st}.items():
                        sums[key] = sums.get(key, 0.0) + v * w
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
                if torch.isfinite(norm):  # NaN guard
                    opt.step()
                opt.zero_grad(set_to_none=True)
                n_updates += 1
        row = {"step": step, "reward": ro.scores.mean().item(), "kl": kl_tok.sum(-1).mean().item(),
               "rlhf_reward": rewards.mean().item(), "response_length": mask.sum(-1).mean().item(),
               **{k: v / max(n_updates, 1) for k, v in sums.items()}, **timing,
               "time_update": time.perf_counter() - t_update}
        history.append(row)
        if log:
            log(row)
        if on_step:
            on_step(step, policy, {"step": step, "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                                   "torch_rng": torch.get_rng_state(), "history": history})
    return history


def run(cfg: Config, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """Read `cfg.prompts`, train from `cfg.policy` against `scorer` (default: `cfg.reward_model`), write
    `model/` and `metrics.jsonl` under `cfg.output_dir`."""
    from farm.errors import FarmError
    from farm.io import atomic_write_text
    from farm.methods.common import read_instructions, reward_scorer, scorer_stats
    from farm.models.loading import load_causal_lm, save_model

    if not cfg.policy or not cfg.prompts:
        raise FarmError("rloo needs `policy` and `prompts`", field="policy" if not cfg.policy else "prompts")
    policy, tok = load_causal_lm(cfg.policy, device=cfg.device, dtype=cfg.dtype)
    ref, _ = load_causal_lm(cfg.reference or cfg.policy, device=cfg.device, dtype=cfg.dtype, tokenizer=tok)
    scorer = scorer or reward_scorer(cfg, "rloo", ref, tok, annotator)
    records = read_instructions(cfg.prompts)
    out = Path(cfg.output_dir)
    ckpt = out / "checkpoint"
    resume = loop_checkpoint(ckpt, ("policy",))
    if resume:
        policy, _ = load_causal_lm(str(ckpt / "policy"), device=cfg.device, dtype=cfg.dtype, tokenizer=tok)
    lines: list[str] = [json.dumps(r) for r in (resume or {}).get("history", [])]

    def log(row: dict) -> None:
        lines.append(json.dumps(row))
        atomic_write_text(out / "metrics.jsonl", "\n".join(lines) + "\n")

    def on_step(step: int, model, state: dict) -> None:
        if cfg.save_every and step % cfg.save_every == 0:
            save_loop_checkpoint(ckpt, tok, step, state, policy=model)

    history = train(policy, tok, records, scorer, cfg, ref_policy=ref, log=log, on_step=on_step, resume=resume)
    save_model(policy, tok, out / "model")
    return {"model": str(out / "model"), "metrics": str(out / "metrics.jsonl"), "steps": len(history),
            "reward": history[-1]["reward"], "kl": history[-1]["kl"], **scorer_stats(scorer)}
