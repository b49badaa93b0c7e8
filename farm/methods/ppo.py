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
from farm.methods.common import Scorer, loop_checkpoint, prompt_text, save_loop_checkpoint
from farm.types import Rollout


@dataclass
class Config:
    """PPO. `farm train ppo configs/train_ppo.yaml` or `farm.methods.ppo.run(Config(...))`."""

    policy: str = ""
    """path of the starting policy (the SFT model); also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions file (records with instruction, optional input) used as RL prompts"""
    reward_model: str = ""
    """path of the reward model (a one-label sequence-classification model); or pass a scorer to `train`"""
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
    output_dir: str = "runs/ppo"
    """where the checkpoint (`model/`), `metrics.jsonl` and `checkpoints/step_k/` go"""
    reference: str = ""
    """path of the frozen reference policy ('' = the starting policy)"""
    value_model: str = ""
    """initialisation of the value model ('' = the reward model if given, else the policy's backbone)"""
    steps: int = 30
    """rollout batches (PPO iterations)"""
    rollout_batch_size: int = 16
    """prompts sampled per iteration (one response each)"""
    minibatch_size: int = 8
    """rollouts per optimiser step"""
    micro_batch_size: int = 8
    """rollouts per forward pass (gradient accumulation = minibatch / micro)"""
    epochs: int = 2
    """passes over each rollout batch (AlpacaFarm: 2)"""
    lr: float = 1e-3
    """policy learning rate (AlpacaFarm 7B: 1e-5; tiny models learn at ~1e-3)"""
    value_lr: float = 1e-3
    """value model learning rate"""
    max_grad_norm: float = 1.0
    """gradient clipping for each model (0 = off)"""
    kl_coef: float = 0.02
    """initial β of the per-token KL penalty (AlpacaFarm: 0.0067–0.02)"""
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
    save_every: int = 0
    """save the policy every k iterations under checkpoints/step_k (0 = only at the end)"""
    seed: int = 0
    """seed for prompt order, sampling and initialisation"""
    device: str = "auto"
    """cpu, cuda or auto"""
    dtype: str = "auto"
    """fp32 on CPU, bf16 on capable GPUs"""
    progress: bool = True
    """progress bar (only on a TTY)"""

    def __post_init__(self):
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.rollout_batch_size % self.minibatch_size or self.minibatch_size % self.micro_batch_size:
            raise ValueError("rollout_batch_size must be a multiple of minibatch_size, and that of micro_batch_size")


# ----- rollouts (shared with RLOO) -----


def collect_rollout(policy, ref_policy, tokenizer, records: Sequence[dict], scorer: Scorer, *, temperature: float,
                    max_new_tokens: int, max_prompt_tokens: int | None, seed: int,
                    missing_eos_score: float | None = None, style: str = "alpaca", batch_size: int = 64,
                    behaviour_logprobs: bool = True) -> tuple[Rollout, dict]:
    """Sample one response per record (its `prompt`, else its formatted instruction), score it with
    `scorer.score(records, texts)`, and compute behaviour and reference log-probs at the sampling temperature.
    Returns the Rollout and timings {generation, scoring, logprobs} in seconds. `behaviour_logprobs=False` leaves
    `ro.logprobs` to the caller (an on-policy single step gets them from its training forward)."""
    from farm.models.generation import generate

    prompts = [prompt_text(r, tokenizer, style) for r in records]
    t0 = time.perf_counter()
    g = generate(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_k=0,
                 top_p=1.0, batch_size=batch_size, seed=seed, max_prompt_tokens=max_prompt_tokens)
    t1 = time.perf_counter()
    scores = torch.tensor([float(s) for s in scorer.score(records, g.texts)], dtype=torch.float32)
    if missing_eos_score is not None:
        scores = torch.where(torch.tensor(g.truncated), torch.tensor(missing_eos_score), scores)
    t2 = time.perf_counter()
    device = next(policy.parameters()).device
    ro = Rollout(g.prompt_ids.to(device), g.prompt_mask.to(device), g.response_ids.to(device),
                 g.response_mask.to(device), scores=scores.to(device), prompts=list(prompts), responses=g.texts)
    if behaviour_logprobs:
        ro.logprobs = batched_logprobs(policy, ro, temperature, batch_size)
    ro.ref_logprobs = batched_logprobs(ref_policy, ro, temperature, batch_size)
    return ro, {"time_generation": t1 - t0, "time_scoring": t2 - t1, "time_logprobs": time.perf_counter() - t2}


def disable_dropout(*models) -> None:
    """Dropout off in every module (nn.Dropout and attention dropout): the training forward must give the same
    log-probs as the no-grad forwards that produced the behaviour/reference numbers (ratio 1, KL 0 at start)."""
    for model in models:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(getattr(m, "attention_dropout", None), float):
                m.attention_dropout = 0.0


def response_logprobs_tail(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature: float = 1.0,
                           return_entropy: bool = False):
    """`maths.response_logprobs`, but the LM head runs only on the last R+1 positions (`logits_to_keep`): with a
    small model the vocabulary projection of the prompt positions is a large share of a step. (B, R) fp32
    (and the entropy (B, R) with `return_entropy`)."""
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    R = response_ids.shape[1]
    try:
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=maths.position_ids_from_mask(mask),
                    logits_to_keep=R + 1)
    except TypeError:  # a model without logits_to_keep: the plain path
        return maths.response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature,
                                       return_entropy)
    logits = out.logits[:, -(R + 1):-1]  # logits at t predict token t+1 → the R response tokens
    lp = maths.logprobs_from_logits(logits, response_ids, temperature)
    return (lp, maths.entropy_from_logits(logits, temperature)) if return_entropy else lp


@torch.no_grad()
def batched_logprobs(model, ro: Rollout, temperature: float, batch_size: int = 64) -> torch.Tensor:
    """Log-probs (B, R) of the rollout's responses under `model` in eval mode (no dropout), fp32."""
    was_training = model.training
    model.eval()
    out = [response_logprobs_tail(model, ro.prompt_ids[s:s + batch_size], ro.prompt_mask[s:s + batch_size],
                                   ro.response_ids[s:s + batch_size], ro.response_mask[s:s + batch_size],
                                   temperature) for s in range(0, len(ro), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def response_values(value_model, ro: Rollout, idx=slice(None)) -> torch.Tensor:
    """V(s_t) (B, R): the value head at the position that PREDICTS response token t (the state before it)."""
    from farm.models.loading import scalar_values

    ids = torch.cat([ro.prompt_ids[idx], ro.response_ids[idx]], 1)
    mask = torch.cat([ro.prompt_mask[idx], ro.response_mask[idx]], 1)
    P = ro.prompt_ids.shape[1]
    return scalar_values(value_model, ids, mask)[:, P - 1:-1]


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


# ----- KL controller -----


@dataclass
class KLController:
    """Fixed β, or Ziegler et al.'s proportional controller: β ← β(1 + clip(KL/target - 1, ±0.2)·n/horizon)."""

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n: int) -> None:
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * n / self.horizon


# ----- training -----


def _whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return maths.masked_whiten(x, mask.float()) if mask.sum() > 1 else x


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

    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    ref_policy.requires_grad_(False).eval()
    if value_model is None:
        value_model = value_model_from_policy(policy)
    disable_dropout(policy, value_model)
    pol_params = [p for p in policy.parameters() if p.requires_grad]
    val_params = [p for p in value_model.parameters() if p.requires_grad]
    pol_opt = torch.optim.AdamW(pol_params, lr=cfg.lr, eps=1e-5)
    val_opt = torch.optim.AdamW(val_params, lr=cfg.value_lr, eps=1e-5)
    kl_ctl = KLController(cfg.kl_coef, cfg.kl_target if cfg.adaptive_kl else None, cfg.kl_horizon)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    if resume:
        pol_opt.load_state_dict(resume["pol_opt"])
        val_opt.load_state_dict(resume["val_opt"])
        kl_ctl.value, rng.bit_generator.state = resume["kl_coef"], resume["rng"]
        torch.set_rng_state(resume["torch_rng"])
        history = list(resume["history"])
    for step in tqdm(range(len(history) + 1, cfg.steps + 1), desc="ppo", disable=not cfg.progress, leave=False):
        batch = [records[i] for i in rng.choice(len(records), cfg.rollout_batch_size,
                                                replace=len(records) < cfg.rollout_batch_size)]
        ro, timing = collect_rollout(policy, ref_policy, tokenizer, batch, scorer, style=cfg.prompt_style,
                                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                     max_prompt_tokens=cfg.max_prompt_tokens, seed=int(rng.integers(2**62)),
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
                advantages = _whiten(advantages, mask)
        stats = update_on_rollout(policy, value_model, pol_opt, val_opt, pol_params, val_params, ro,
                                  advantages, returns, old_values, cfg, rng)
        seq_kl = kl.sum(-1).mean().item()
        row = {"step": step, "reward": ro.scores.mean().item(), "kl": seq_kl,
               "non_score_reward": (-kl_ctl.value * kl).sum(-1).mean().item(), "kl_coef": kl_ctl.value,
               "response_length": mask.sum(-1).mean().item(),
               "no_eos_frac": 1.0 - _has_eos(ro, tokenizer).mean().item(),
               **stats, **timing, "time_update": time.perf_counter() - t_update}
        kl_ctl.update(seq_kl, cfg.rollout_batch_size)
        history.append(row)
        if log:
            log(row)
        if on_step:
            on_step(step, policy, value_model, {"step": step, "pol_opt": pol_opt.state_dict(),
                                                "val_opt": val_opt.state_dict(), "kl_coef": kl_ctl.value,
                                                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                                "history": history})
    return history


def _has_eos(ro: Rollout, tokenizer) -> torch.Tensor:
    last = maths.last_token_index(ro.response_mask)
    return (ro.response_ids[torch.arange(len(ro)), last] == tokenizer.eos_token_id).float()


def minibatch_updates(ro: Rollout, cfg: Config, rng: np.random.Generator, params_opts, micro_step) -> dict:
    """`cfg.epochs` passes of shuffled minibatches over one rollout batch, shared by PPO and Safe PPO.

    `micro_step(i, n_tokens)` computes and back-propagates the losses of micro-batch indices `i` (normalised by
    the minibatch's `n_tokens`, so accumulation does not change the update) and returns its stats; each
    (params, optimizer) pair then takes one clipped step per minibatch. Stats named `*_loss` are summed over
    micro-batches (already shares of the minibatch), others weighted by the micro-batch's token share; the result
    averages them over minibatches."""
    sums: dict[str, float] = {}
    n = 0
    mask = ro.response_mask.float()
    for _ in range(cfg.epochs):
        order = torch.as_tensor(rng.permutation(len(ro)), device=mask.device)
        for s in range(0, len(ro), cfg.minibatch_size):
            mb = order[s:s + cfg.minibatch_size]
            n_tokens = mask[mb].sum().clamp(min=1)
            for m in range(0, len(mb), cfg.micro_batch_size):
                i = mb[m:m + cfg.micro_batch_size]
                for k, v in micro_step(i, n_tokens).items():
                    w = 1.0 if k.endswith("_loss") else (mask[i].sum() / n_tokens).item()
                    sums[k] = sums.get(k, 0.0) + v * w
            for params, opt in params_opts:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0
                                                      else math.inf)
                if torch.isfinite(norm):  # NaN guard: skip a poisoned step
                    opt.step()
                opt.zero_grad(set_to_none=True)
            n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def update_on_rollout(policy, value_model, pol_opt, val_opt, pol_params, val_params, ro: Rollout,
                      advantages, returns, old_values, cfg: Config, rng: np.random.Generator) -> dict:
    """`cfg.epochs` passes of shuffled minibatches over one rollout batch. Returns averaged statistics."""
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

    return minibatch_updates(ro, cfg, rng, ((pol_params, pol_opt), (val_params, val_opt)), micro_step)


def value_model_from_policy(policy):
    """A one-output sequence-classification model sharing the policy's ARCHITECTURE and initial weights (a
    copy, not shared), with the head at zero so initial values are 0."""
    from transformers import AutoModelForSequenceClassification

    config = policy.config.__class__.from_dict(policy.config.to_dict())
    config.num_labels = 1
    vm = AutoModelForSequenceClassification.from_config(config)
    backbone = getattr(vm, vm.base_model_prefix)
    backbone.load_state_dict(getattr(policy, policy.base_model_prefix).state_dict())
    from farm.models.loading import score_head

    with torch.no_grad():
        score_head(vm).weight.zero_()
    return vm.to(next(policy.parameters()).device)


# ----- file-level entry point -----


def run(cfg: Config, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """Read `cfg.prompts`, train from `cfg.policy` against `scorer` (default: `cfg.reward_model`), write
    `model/`, `metrics.jsonl` (per-iteration reward, KL, ... for over-optimisation curves) under `cfg.output_dir`.
    With `save_every`, policy snapshots go to `checkpoints/step_k` and a resumable `checkpoint/` (policy, value
    model, loop state) is kept: re-running the same command continues from it."""
    from farm.errors import FarmError
    from farm.io import atomic_write_text
    from farm.methods.common import read_instructions, reward_scorer, scorer_stats
    from farm.models.loading import load_causal_lm, load_scalar_model, save_model

    if not cfg.policy or not cfg.prompts:
        raise FarmError("ppo needs `policy` and `prompts`", field="policy" if not cfg.policy else "prompts")
    torch.manual_seed(cfg.seed)
    policy, tok = load_causal_lm(cfg.policy, device=cfg.device, dtype=cfg.dtype)
    ref, _ = load_causal_lm(cfg.reference or cfg.policy, device=cfg.device, dtype=cfg.dtype, tokenizer=tok)
    scorer = scorer or reward_scorer(cfg, "ppo", ref, tok, annotator)
    value_init = cfg.value_model or cfg.reward_model
    value_model = (load_scalar_model(value_init, device=cfg.device, dtype=cfg.dtype, tokenizer=tok)[0]
                   if value_init else None)
    records = read_instructions(cfg.prompts)
    out = Path(cfg.output_dir)
    ckpt = out / "checkpoint"
    resume = loop_checkpoint(ckpt, ("policy", "value"))
    if resume:
        policy, _ = load_causal_lm(str(ckpt / "policy"), device=cfg.device, dtype=cfg.dtype, tokenizer=tok)
        value_model, _ = load_scalar_model(str(ckpt / "value"), device=cfg.device, dtype=cfg.dtype, tokenizer=tok)
    lines: list[str] = [json.dumps(r) for r in (resume or {}).get("history", [])]

    def log(row: dict) -> None:
        lines.append(json.dumps(row))
        atomic_write_text(out / "metrics.jsonl", "\n".join(lines) + "\n")

    def on_step(step: int, model, value, state: dict) -> None:
        if cfg.save_every and step % cfg.save_every == 0:
            save_model(model, tok, out / "checkpoints" / f"step_{step}")  # for over-optimisation curves
            save_loop_checkpoint(ckpt, tok, step, state, policy=model, value=value)  # resumable

    history = train(policy, tok, records, scorer, cfg, ref_policy=ref, value_model=value_model, log=log,
                    on_step=on_step, resume=resume)
    save_model(policy, tok, out / "model")
    last = history[-1]
    return {"model": str(out / "model"), "metrics": str(out / "metrics.jsonl"), "steps": len(history),
            "reward": last["reward"], "kl": last["kl"], **scorer_stats(scorer)}
