"""The on-policy RL floor shared by PPO, RLOO, GRPO and safe PPO: sample and score a rollout, log-probs under the
policy and the reference at the sampling temperature, values, the adaptive KL coefficient, and the minibatch loop
that turns one rollout batch into optimiser steps.

Conventions: sampling is temperature-only (no top-k/top-p), so the log-probs of the training forward equal the
sampler's and the importance ratio on the first minibatch is exactly 1 (tests/test_methods_zoo2.py); dropout is
off in every trained model for the same reason; log-probs and KL are fp32.
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
from farm.methods.data import prompt_text, read_instructions
from farm.methods.loop import load_checkpoint, save_checkpoint
from farm.methods.scorers import Scorer, reward_scorer, scorer_stats
from farm.methods.shard import SINGLE, Shard, current_shard, minibatches
from farm.types import Rollout

# ----- rollouts -----


def collect_rollout(policy, ref_policy, tokenizer, records: Sequence[dict], scorer: Scorer, *, temperature: float,
                    max_new_tokens: int, max_prompt_tokens: int | None, seed: int,
                    missing_eos_score: float | None = None, style: str = "alpaca", batch_size: int = 64,
                    behaviour_logprobs: bool = True, group: int = 1) -> tuple[Rollout, dict]:
    """Sample one response per record (its `prompt`, else its formatted instruction), score it with
    `scorer.score(records, texts)`, and compute behaviour and reference log-probs at the sampling temperature.
    Returns the Rollout and timings {generation, scoring, logprobs} in seconds. `behaviour_logprobs=False` leaves
    `ro.logprobs` to the caller (an on-policy single step gets them from its training forward). `group` = k when
    the records come as k consecutive copies of each prompt (RLOO, GRPO): the log-prob passes then run each prompt
    once (`group_logprobs_tail`)."""
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
        ro.logprobs = batched_logprobs(policy, ro, temperature, batch_size, group)
    ro.ref_logprobs = batched_logprobs(ref_policy, ro, temperature, batch_size, group)
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


def group_logprobs_tail(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature: float = 1.0,
                        k: int = 1, return_entropy: bool = False):
    """`response_logprobs_tail` for rows that come in groups of k consecutive rows with the same prompt (RLOO's
    and GRPO's k samples of a prompt): each prompt runs through the model ONCE and its keys and values, with their
    gradient, serve its k responses (`farm.models.shared_prefix`), so the prompt tokens cost 1/k of their whole-row
    price in the forward and the backward. The same numbers to float rounding (tests/test_methods_floor.py); rows
    that do not come in such groups (or k = 1, or a DDP-wrapped model) take the whole-row path. (B, R) fp32 (and
    the entropy (B, R) with `return_entropy`)."""
    from farm.models.shared_prefix import continuation_logits

    B, P = prompt_ids.shape
    R = response_ids.shape[1]
    G = B // k if k > 1 and B % k == 0 and not isinstance(model, torch.nn.parallel.DistributedDataParallel) else 0
    if G:
        p, pm = prompt_ids.view(G, k, P), prompt_mask.view(G, k, P)
        if not (torch.equal(p, p[:, :1].expand_as(p)) and torch.equal(pm, pm[:, :1].expand_as(pm))):
            G = 0
    if not G:
        return response_logprobs_tail(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature,
                                      return_entropy)
    ids, m = response_ids.view(G, k, R), response_mask.view(G, k, R)
    try:
        logits = continuation_logits(model, p[:, 0], pm[:, 0], [(ids[:, j], m[:, j]) for j in range(k)])
    except TypeError:  # a model without logits_to_keep or a cache: whole rows
        return response_logprobs_tail(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature,
                                      return_entropy)
    # (k·G, R, V), row j·G + g = sample j of prompt g → back to the rollout's order g·k + j
    lp = maths.logprobs_from_logits(logits, ids.transpose(0, 1).reshape(k * G, R), temperature)
    lp = lp.view(k, G, R).transpose(0, 1).reshape(B, R)
    if not return_entropy:
        return lp
    return lp, maths.entropy_from_logits(logits, temperature).view(k, G, R).transpose(0, 1).reshape(B, R)


@torch.no_grad()
def batched_logprobs(model, ro: Rollout, temperature: float, batch_size: int = 64, group: int = 1) -> torch.Tensor:
    """Log-probs (B, R) of the rollout's responses under `model` in eval mode (no dropout), fp32. `group` = k:
    rows in groups of k sharing a prompt (`group_logprobs_tail`; chunks keep groups whole)."""
    was_training = model.training
    model.eval()
    if group > 1:
        batch_size = max(group, batch_size // group * group)
    out = [group_logprobs_tail(model, ro.prompt_ids[s:s + batch_size], ro.prompt_mask[s:s + batch_size],
                                ro.response_ids[s:s + batch_size], ro.response_mask[s:s + batch_size],
                                temperature, group) for s in range(0, len(ro), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def response_values(value_model, ro: Rollout, idx=slice(None)) -> torch.Tensor:
    """V(s_t) (B, R): the value head at the position that PREDICTS response token t (the state before it)."""
    from farm.models.loading import scalar_values

    ids = torch.cat([ro.prompt_ids[idx], ro.response_ids[idx]], 1)
    mask = torch.cat([ro.prompt_mask[idx], ro.response_mask[idx]], 1)
    P = ro.prompt_ids.shape[1]
    return scalar_values(value_model, ids, mask)[:, P - 1:-1]


def sequence_logprobs(model, batch: dict, length_normalised: bool = False, shared_prefix: bool = False) -> torch.Tensor:
    """Summed (or averaged per token) log-prob of each response of a `data.collate_pairs` batch. → (2B,) fp32.

    `shared_prefix`: the prompt (the same for a pair's two responses) runs through the model once and its keys and
    values serve both responses (`farm.models.shared_prefix`): the same numbers to float rounding, about half the
    compute when prompts are longer than answers. One process only (a DDP wrapper needs its single forward)."""
    if shared_prefix and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        from farm.models.shared_prefix import continuation_logprobs

        B = batch["prompt_ids"].shape[0] // 2
        r, rm = batch["response_ids"], batch["response_mask"]
        lc, lr = continuation_logprobs(model, batch["prompt_ids"][:B], batch["prompt_mask"][:B],
                                       [(r[:B], rm[:B]), (r[B:], rm[B:])])
        lp = torch.cat([lc, lr])  # (2B, R)
    else:
        lp = response_logprobs_tail(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                                    batch["response_mask"])
    m = batch["response_mask"].float()
    total = (lp * m).sum(-1)  # (2B,)
    return total / m.sum(-1).clamp(min=1) if length_normalised else total


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


# ----- the outer loop, group rollouts, the update loop and the KL coefficient -----


def iterate(cfg, desc: str, optimizers: dict, one_step: Callable[[int, np.random.Generator], dict], *,
            resume: dict | None = None, log: Callable[[dict], None] | None = None,
            on_step: Callable[[int, dict], None] | None = None,
            extra_state: Callable[[], dict] | None = None) -> list[dict]:
    """The outer loop of PPO, RLOO and GRPO: `cfg.steps` iterations of `one_step(step, rng) → metrics row`, one
    numpy stream seeded by `cfg.train.seed`. After each, `on_step(step, state)` gets the loop state (every
    optimiser by its name, both RNG streams, the history, and `extra_state()`); passing that state back as
    `resume` (optimisers, RNGs and history restored here; the caller restores its extras and the models)
    continues the run exactly where it stopped. Returns the history."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(cfg.train.seed)
    history: list[dict] = []
    if resume:
        for name, opt in optimizers.items():
            opt.load_state_dict(resume[name])
        rng.bit_generator.state = resume["rng"]
        torch.set_rng_state(resume["torch_rng"])
        history = list(resume["history"])
    for step in tqdm(range(len(history) + 1, cfg.steps + 1), desc=desc, disable=not cfg.train.progress,
                     leave=False):
        row = one_step(step, rng)
        history.append(row)
        if log:
            log(row)
        if on_step:
            on_step(step, {"step": step, **{k: o.state_dict() for k, o in optimizers.items()},
                           "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history,
                           **(extra_state() if extra_state else {})})
    return history


def group_rollout(policy, ref_policy, tokenizer, records: Sequence[dict], scorer: Scorer, cfg,
                  rng: np.random.Generator, shard: Shard = SINGLE) -> tuple[Rollout, dict, tuple | None]:
    """RLOO's and GRPO's rollout: `cfg.prompts_per_step` prompts, `cfg.k` responses each (k consecutive rows).
    When the rollout gets one un-split optimiser step (`cfg.epochs == 1`, micro-batch = minibatch = the rollout),
    the training forward IS the behaviour forward (ratio exactly 1): it is run here, with gradients, and returned
    as `first` = (log-probs, entropy); the separate no-grad pass TRL does is skipped (same maths, one policy
    forward fewer; its seconds are `time_policy_forward`). Else `first` is None and `ro.logprobs` come from a
    no-grad pass. Every log-prob pass runs each prompt once for its k responses (`group_logprobs_tail`).

    With `shard.world` > 1 every process draws the same prompts and samples its block of the groups
    (`shard.local_groups`) with its own seed; the sizes compared are then the local ones."""
    chosen = rng.choice(len(records), cfg.prompts_per_step, replace=len(records) < cfg.prompts_per_step)
    chosen, seed = shard.local_draw(chosen, int(rng.integers(2**62)))
    batch = [records[i] for i in chosen for _ in range(cfg.k)]  # k consecutive copies per prompt
    on_policy = cfg.epochs == 1 and cfg.micro_batch_size == local_minibatch(cfg, shard) == len(batch)
    ro, timing = collect_rollout(policy, ref_policy, tokenizer, batch, scorer, style=cfg.prompt_style,
                                 temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                 max_prompt_tokens=cfg.max_prompt_tokens, seed=seed,
                                 missing_eos_score=cfg.missing_eos_score, behaviour_logprobs=not on_policy,
                                 group=cfg.k)
    first = None
    if on_policy:
        t0 = time.perf_counter()
        first = group_logprobs_tail(policy, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask,
                                    cfg.temperature, cfg.k, return_entropy=True)
        ro.logprobs = first[0].detach()
        timing["time_policy_forward"] = time.perf_counter() - t0
    return ro, timing, first


def local_minibatch(cfg, shard: Shard = SINGLE) -> int:
    """This process's rows of a `cfg.minibatch_size` minibatch (checks that prompts and minibatch divide)."""
    if shard.world > 1:
        shard.local(cfg.prompts_per_step, "prompts_per_step")
    return shard.local(cfg.minibatch_size, "minibatch_size")


def start_policy_only(policy, ref_policy, cfg) -> tuple[Any, list, Any, Shard]:
    """The start of a critic-free loop's `train` (RLOO, GRPO): the run's seed, the frozen reference (a copy of the
    policy unless given), dropout off, the optimiser over the trainable parameters, this process's Shard (sizes
    checked). Returns (reference, params, optimiser, shard)."""
    import copy

    from farm.methods.loop import make_optimizer

    torch.manual_seed(cfg.train.seed)
    ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    ref_policy.requires_grad_(False).eval()
    disable_dropout(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.train)
    shard = current_shard(cfg.train.device)  # one process unless under `accelerate launch` (farm/methods/shard.py)
    local_minibatch(cfg, shard)
    return ref_policy, params, opt, shard


def select_rows(ro: Rollout, idx: torch.Tensor) -> Rollout:
    """The rollout restricted to rows `idx` (e.g. the groups dynamic sampling keeps)."""
    pick = idx.tolist()
    return Rollout(ro.prompt_ids[idx], ro.prompt_mask[idx], ro.response_ids[idx], ro.response_mask[idx],
                   None if ro.logprobs is None else ro.logprobs[idx],
                   None if ro.ref_logprobs is None else ro.ref_logprobs[idx],
                   None if ro.scores is None else ro.scores[idx], [ro.prompts[i] for i in pick],
                   [ro.responses[i] for i in pick])




def minibatch_updates(units: torch.Tensor, micro_step: Callable[[torch.Tensor, torch.Tensor], dict],
                      params_opts: Sequence, *, epochs: int, minibatch_size: int, micro_batch_size: int,
                      max_grad_norm: float, rng: np.random.Generator | None,
                      shard: Shard = SINGLE) -> dict[str, float]:
    """`epochs` passes of minibatches over one rollout batch of len(units) rows, shared by PPO, RLOO, GRPO and
    safe PPO. `units` (N,) is what a row counts in the loss normalisation (its real tokens, or 1 per sequence).

    `micro_step(i, n_units)` computes and back-propagates the losses of micro-batch row indices `i`, each
    normalised by `n_units`, the units of the WHOLE minibatch (so gradient accumulation gives the update of one big
    batch), and returns its stats; then each (params, optimizer) pair takes one step per minibatch, its gradient
    norm clipped to `max_grad_norm` (0 = off) and skipped when not finite (NaN guard). Row order: a fresh
    `rng.permutation` per epoch, or as given when `rng` is None. Stats named `loss` or `*_loss` are summed over the
    micro-batches (they are already shares of the minibatch), others weighted by the micro-batch's share of the
    units; the result averages them over the minibatches.

    With `shard.world` > 1 (farm/methods/shard.py) `units` are this process's rows and `minibatch_size` its local
    share: `n_units` is summed over processes and so are the gradients before the clip, so every process takes
    the step one process takes on the union of the local minibatches; the stats are summed over processes too.
    A process's row order then comes from its own child stream (one draw of `rng` per epoch, the same everywhere,
    so the shared stream stays in step whatever each process holds)."""
    sums: dict[str, float] = {}
    n = 0
    for _ in range(epochs):
        if rng is None:
            order = torch.arange(len(units))
        elif shard.world == 1:
            order = torch.as_tensor(rng.permutation(len(units)))
        else:
            child = np.random.default_rng([int(rng.integers(2**62)), shard.rank])
            order = torch.as_tensor(child.permutation(len(units)))
        order = order.to(units.device)
        for b in range(minibatches(len(units), minibatch_size, shard)):
            mb = order[b * minibatch_size:(b + 1) * minibatch_size]
            n_units = shard.all_sum(units[mb].sum()).clamp(min=1)
            for m in range(0, len(mb), micro_batch_size):
                i = mb[m:m + micro_batch_size]
                for k, v in micro_step(i, n_units).items():
                    w = 1.0 if k == "loss" or k.endswith("_loss") else (units[i].sum() / n_units).item()
                    sums[k] = sums.get(k, 0.0) + v * w
            for params, opt in params_opts:
                shard.sum_grads(params)
                norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
                if torch.isfinite(norm):  # NaN guard: skip a poisoned step
                    opt.step()
                opt.zero_grad(set_to_none=True)
            n += 1
    return {k: v / max(n, 1) for k, v in shard.sum_stats(sums).items()}


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


# ----- the run folder of an RL method (PPO, RLOO, GRPO) -----


@dataclass
class RLRun:
    """What an RL method's `run` starts from (`start_run`) and how it records itself: metrics.jsonl rewritten
    atomically after every iteration, the resumable `checkpoint/` (`loop.save_checkpoint`), the final `model/`."""

    policy: Any
    ref: Any
    tokenizer: Any
    scorer: Scorer
    records: list[dict]
    out: Path
    resume: dict | None
    lines: list[str]
    shard: Shard = SINGLE
    """under `accelerate launch`, only the main process writes metrics, checkpoints and the model"""

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    def log(self, row: dict) -> None:
        from farm.io import atomic_write_text

        self.lines.append(json.dumps(row))
        if not self.shard.is_main:
            return
        atomic_write_text(self.out / "metrics.jsonl", "\n".join(self.lines) + "\n")

    def save(self, step: int, state: dict, **models) -> None:
        if self.shard.is_main:
            save_checkpoint(self.checkpoint, self.tokenizer, step, state, **models)

    def finish(self, history: list[dict], **extra) -> dict[str, Any]:
        from farm.models.loading import save_model

        if self.shard.is_main:
            save_model(self.policy, self.tokenizer, self.out / "model")
        return {"model": str(self.out / "model"), "metrics": str(self.out / "metrics.jsonl"), "steps": len(history),
                "reward": history[-1]["reward"], "kl": history[-1]["kl"], **extra, **scorer_stats(self.scorer)}


def run_policy_only(cfg, method: str, train: Callable, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """`run` of a critic-free method (RLOO, GRPO): start the run folder, `train` with a resumable checkpoint every
    `cfg.save_every` steps, save the model."""
    r = start_run(cfg, method, ("policy",), scorer, annotator)

    def on_step(step: int, model, state: dict) -> None:
        if cfg.save_every and step % cfg.save_every == 0:
            r.save(step, state, policy=model)

    history = train(r.policy, r.tokenizer, r.records, r.scorer, cfg, ref_policy=r.ref, log=r.log, on_step=on_step,
                    resume=r.resume)
    return r.finish(history)


def start_run(cfg, method: str, models: Sequence[str], scorer: Scorer | None = None, annotator=None) -> RLRun:
    """Check `cfg.policy`/`cfg.prompts`; load the frozen reference, the policy (from `checkpoint/policy` when a
    complete checkpoint of `models` is there to resume), the reward (`scorer`, else `cfg.reward`) and the prompts."""
    from farm.errors import FarmError
    from farm.models.loading import load_causal_lm

    if not cfg.policy or not cfg.prompts:
        raise FarmError(f"{method} needs `policy` and `prompts`", field="policy" if not cfg.policy else "prompts")
    tc = cfg.train
    torch.manual_seed(tc.seed)
    out = Path(cfg.output_dir)
    resume = load_checkpoint(out / "checkpoint", models)
    policy, tok = load_causal_lm(cfg.policy, device=tc.device, dtype=tc.dtype)
    ref, _ = load_causal_lm(cfg.reference or cfg.policy, device=tc.device, dtype=tc.dtype, tokenizer=tok)
    if resume:
        policy, _ = load_causal_lm(str(out / "checkpoint" / "policy"), device=tc.device, dtype=tc.dtype,
                                   tokenizer=tok)
    scorer = scorer or reward_scorer(cfg, method, ref, tok, annotator)
    lines = [json.dumps(row) for row in (resume or {}).get("history", [])]
    return RLRun(policy, ref, tok, scorer, read_instructions(cfg.prompts), out, resume, lines,
                 current_shard(tc.device))
