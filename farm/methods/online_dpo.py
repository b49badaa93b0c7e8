"""Online DPO with AI feedback: preference pairs sampled from the CURRENT policy and labelled by a judge, round
after round (OAIF, Guo et al. 2024, https://arxiv.org/abs/2402.04792; iterative DPO with best-vs-worst pairs as in
Self-Rewarding LMs, Yuan et al. 2024, https://arxiv.org/abs/2401.10020, and Iterative RPO, Pang et al. 2024,
https://arxiv.org/abs/2404.19733, whose NLL term on the chosen answer is `nll_weight`). Details:
docs/methods/online_dpo.md.

One round:
1. k responses per prompt from the current policy at `temperature` (temperature only; no top-k/top-p);
2. the judge (any annotator: an LLM judge folder, a pool, a simulated judge) runs a knockout for the best response
   and a reversed knockout for the worst (`scorers.knockout(pick=...)`; both share their first-round matches);
3. (best, worst) is a DPO pair (dropped when the two texts are equal);
4. one pass of the DPO loss (`dpo.LOSSES[loss]` + `nll_weight` × NLL of chosen) over the round's pairs, with the
   frozen reference = the starting policy (log-probs precomputed per round), through the floor's
   `pairs.train_pairs`. Online DPO imports DPO's loss table and nothing else of dpo.py: one definition of each
   loss, read where DPO is read.

Departures (on purpose): the reference stays the starting policy in every round (the KL anchor does not drift);
a finished round is saved (`round_<k>/model`, `round_<k>/pairs.jsonl`) and skipped on a re-run, so a killed run
resumes at its last finished round with the same numbers; judge verdicts go through `annotate_pairs` with
`output_dir/judge_cache.sqlite` (an API judge is never asked twice for the same match).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.methods.data import prompt_text, read_instructions
from farm.methods.dpo import LOSSES
from farm.methods.loop import TrainConfig, write_metrics
from farm.methods.pairs import train_pairs
from farm.methods.scorers import knockout, sample_groups


@dataclass
class Config:
    """`farm train online_dpo --config configs/train_online_dpo.yaml` or `online_dpo.run(Config(...))`."""

    RENAMED: ClassVar[dict[str, str]] = {"seed": "train.seed"}

    policy: str = ""
    """starting policy (usually the SFT model); also the frozen reference unless `reference` is set"""
    prompts: str = ""
    """instructions (records with instruction, optional input) the policy answers each round"""
    judge: str = ""
    """the annotator that labels each round's pairs: a judge folder, a pool, or a simulated judge name"""
    output_dir: str = "runs/online_dpo"
    """round_<k>/ (pairs.jsonl, model), model/, metrics.json, metrics.jsonl, judge_cache.sqlite"""
    reference: str = ""
    """frozen reference policy ('' = the starting policy)"""
    rounds: int = 20
    """sample → judge → DPO rounds"""
    prompts_per_round: int = 256
    """prompts per round, a fresh seeded slice of `prompts` each round"""
    k: int = 4
    """responses per prompt (≥ 2); the judge's best and worst of them make the pair"""
    temperature: float = 0.7
    """sampling temperature (best at the temperature the policy is evaluated at)"""
    max_new_tokens: int = 32
    """response length limit"""
    max_prompt_tokens: int = 192
    """prompts are cut from the left to this many tokens"""
    gen_batch_size: int = 64
    """sequences per generation batch"""
    loss: str = "sigmoid"
    """a loss of dpo.LOSSES: sigmoid (DPO), ipo, length_normalised, ..."""
    beta: float = 0.1
    """DPO's β (not portable between summed and length-normalised log-probs)"""
    nll_weight: float = 1.0
    """α of the NLL term on the chosen answer (RPO). 0 = plain DPO, which lowers the chosen answer too and, on
    near-identical on-policy pairs, moves that mass to other wrong answers"""
    prompt_style: str = "alpaca"
    """alpaca or chat"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=1.0, schedule="constant",
                                                                   warmup_ratio=0.0, per_device_batch_size=32))
    """optimisation of each round's DPO pass (tiny models lr 1e-4; a 7B ~5e-7); `train.seed` also seeds the prompt
    slices, the sampling and the judge"""

    def __post_init__(self):
        if self.k < 2:
            raise ValueError("k must be at least 2 (a pair needs two responses)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")


def round_pairs(policy, tokenizer, records: Sequence[dict], annotator, cfg: Config, round_: int,
                cache_path: str | None = None) -> tuple[list[dict], dict]:
    """Sample k responses per record, judge best and worst, return DPO examples {prompt, chosen, rejected,
    instruction, input} and the round's stats."""
    seed = cfg.train.seed * 1000 + round_
    prompts = [prompt_text(r, tokenizer, cfg.prompt_style) for r in records]
    groups = sample_groups(policy, tokenizer, records, cfg.k, temperature=cfg.temperature,
                           max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size, style=cfg.prompt_style,
                           seed=seed, max_prompt_tokens=cfg.max_prompt_tokens)
    texts = [t for g in groups for t in g]
    best = knockout(annotator, records, groups, seed=seed, cache_path=cache_path)
    worst = knockout(annotator, records, groups, seed=seed, cache_path=cache_path, pick="worst")
    examples = [{"prompt": p, "chosen": g[b], "rejected": g[w], "instruction": r.get("instruction", ""),
                 "input": r.get("input", "")}
                for p, r, g, b, w in zip(prompts, records, groups, best, worst) if g[b] != g[w]]
    stats = {"pairs": len(examples), "dropped_equal": len(records) - len(examples),
             "mean_length": float(np.mean([len(t) for t in texts])),
             "chosen_longer": float(np.mean([len(e["chosen"]) > len(e["rejected"]) for e in examples]))
             if examples else None}
    return examples, stats


def train(policy, tokenizer, records: Sequence[dict], annotator, cfg: Config, *, ref_policy=None,
          out_dir: str | Path | None = None, log=None) -> list[dict]:
    """`cfg.rounds` rounds on `policy` in place (see the module docstring). With `out_dir`, finished rounds are
    saved and skipped on a re-run. Returns one stats dict per round."""
    import copy

    from farm.io import read_records, write_records
    from farm.models.loading import is_complete_checkpoint, load_causal_lm, save_model

    device = str(next(policy.parameters()).device)
    ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
    ref_policy.requires_grad_(False).eval()
    cache = str(Path(out_dir) / "judge_cache.sqlite") if out_dir is not None else None
    history: list[dict] = []
    finished: Path | None = None  # the last finished round's model, loaded once before the first round to run

    def load_finished() -> None:
        loaded, _ = load_causal_lm(str(finished), device=device, tokenizer=tokenizer)
        policy.load_state_dict(loaded.state_dict())

    for r in range(cfg.rounds):
        rdir = Path(out_dir) / f"round_{r}" if out_dir is not None else None
        if rdir is not None and is_complete_checkpoint(rdir / "model"):
            finished = rdir / "model"
            history.append(json.loads((rdir / "stats.json").read_text()))
            continue
        if finished is not None:
            load_finished()
            finished = None
        order = np.random.default_rng([cfg.train.seed, r]).permutation(len(records))
        batch = [records[i] for i in order[:cfg.prompts_per_round or len(records)]]
        if rdir is not None and (rdir / "pairs.jsonl").exists():
            examples = read_records(rdir / "pairs.jsonl")
            stats = {"pairs": len(examples)}
        else:
            examples, stats = round_pairs(policy, tokenizer, batch, annotator, cfg, r, cache)
            if rdir is not None:
                write_records(rdir / "pairs.jsonl", examples)
        row: dict[str, Any] = {"round": r, **stats}
        if examples:
            tc = dataclasses.replace(cfg.train, seed=cfg.train.seed + r, save_every=0)
            res = train_pairs(policy, tokenizer, [{k: e[k] for k in ("prompt", "chosen", "rejected")} for e in examples],
                              LOSSES[cfg.loss], tc, beta=cfg.beta, nll_weight=cfg.nll_weight,
                              max_prompt_tokens=cfg.max_prompt_tokens, max_response_tokens=cfg.max_new_tokens + 1,
                              ref_model=ref_policy, desc=f"dpo[{cfg.loss}]")
            last = res["history"][-1] if res["history"] else {}
            row.update(loss=res["loss"], steps=res["steps"],
                       **{k: last[k] for k in ("accuracy", "reward_margin", "logp_chosen", "logp_rejected")
                          if k in last})
        history.append(row)
        if log:
            log(row)
        if rdir is not None:
            (rdir / "stats.json").write_text(json.dumps(row))
            save_model(policy, tokenizer, rdir / "model")  # last: its COMPLETE marks the round finished
    if finished is not None:  # every round had finished before: the policy is the last one
        load_finished()
    return history


def run(cfg: Config, annotator=None) -> dict[str, Any]:
    """Read `cfg.prompts`, run the rounds from `cfg.policy` judged by `cfg.judge` (or the `annotator` given, e.g. a
    world's own simulated judge), write `model/`, `metrics.jsonl` and `metrics.json` under `cfg.output_dir`."""
    from farm.errors import FarmError
    from farm.io import atomic_write_text
    from farm.models.loading import load_causal_lm, save_model

    if not cfg.policy or not cfg.prompts:
        raise FarmError("online_dpo needs `policy` and `prompts`", field="policy" if not cfg.policy else "prompts")
    if annotator is None:
        if not cfg.judge:
            raise FarmError("online_dpo needs a judge: set `judge` (a judge folder, pool or simulated judge)",
                            field="judge")
        from farm.annotators import load_annotator

        annotator = load_annotator(cfg.judge)
    import torch

    torch.manual_seed(cfg.train.seed)
    policy, tok = load_causal_lm(cfg.policy, device=cfg.train.device, dtype=cfg.train.dtype)
    ref, _ = load_causal_lm(cfg.reference or cfg.policy, device=cfg.train.device, dtype=cfg.train.dtype,
                            tokenizer=tok)
    out = Path(cfg.output_dir)
    history = train(policy, tok, read_instructions(cfg.prompts), annotator, cfg, ref_policy=ref, out_dir=out)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    metrics = {"method": "online_dpo", "rounds": len(history), "pairs": sum(r.get("pairs", 0) for r in history),
               "model_dir": str(save_model(policy, tok, out / "model"))}
    write_metrics(out, metrics)
    return metrics
