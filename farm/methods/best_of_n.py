"""Best-of-n (rejection sampling at inference): sample n responses per prompt and return the one a scorer
(a reward model, a gold function) ranks highest, or the winner of a knockout tournament judged by any annotator.

References: AlpacaFarm (https://arxiv.org/abs/2305.14387, "best-of-n sampling" baseline); Nakano et al. 2021
WebGPT (https://arxiv.org/abs/2112.09332); Gao et al. 2023 reward-model over-optimisation
(https://arxiv.org/abs/2210.10760). Details: docs/methods/best_of_n.md.

Departures: candidates are sampled with plain temperature sampling (no top-p) from one seeded generator; ties in
score go to the first sample; the tournament randomises which candidate is shown first in every match, so a
position-biased judge does not favour the earlier samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from farm.errors import FarmError
from farm.methods.data import read_instructions
from farm.methods.scorers import RewardModelScorer, Scorer, best_by_score, knockout, sample_groups


@dataclass
class Config:
    """`farm train best_of_n --config configs/train_best_of_n.yaml`"""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style"}

    policy: str
    """causal LM folder (or cached hub name) that samples the candidates"""
    prompts: str
    """JSON/JSONL records with instruction and input (optional): the prompts to answer"""
    output_dir: str
    """output_dir/model_outputs.json (AlpacaEval format) and metrics.json go here"""
    reward_model: str = ""
    """sequence-classification folder used as the scorer (give this or `annotator`)"""
    annotator: str = ""
    """judge/pool name or folder (farm.annotators.load_annotator) for a pairwise knockout tournament instead of a
    reward model; verdicts cached in output_dir/annotations.sqlite"""
    n: int = 16
    """candidates per prompt"""
    temperature: float = 1.0
    """sampling temperature for the candidates"""
    max_new_tokens: int = 128
    """response length limit"""
    batch_size: int = 16
    """prompts × candidates generated per forward batch"""
    prompt_style: str = "alpaca"
    """prompt format: alpaca or chat"""
    generator: str = ""
    """generator name written to the outputs (default: best_of_<n>)"""
    seed: int = 0
    """sampling and tournament seed"""
    device: str = "auto"
    """auto, cpu or cuda"""


def best_of_n(model, tokenizer, records: Sequence[dict], n: int, scorer: Scorer | None = None, *, annotator=None,
              temperature: float = 1.0, max_new_tokens: int = 128, batch_size: int = 16, style: str = "alpaca",
              seed: int = 0, generator: str | None = None, progress: bool = False,
              annotator_cache: str | None = None) -> list[dict[str, Any]]:
    """For each record (instruction, input): sample n responses and keep the best by `scorer` (highest score,
    `scorers.best_by_score`) or by a knockout tournament judged by `annotator` (`scorers.knockout`). Returns
    AlpacaEval model_outputs records (instruction, input, output, generator) with `score` (the scorer's; None
    for a tournament) and `candidates`."""
    if (scorer is None) == (annotator is None):
        raise ValueError("give exactly one of scorer or annotator")
    groups = sample_groups(model, tokenizer, records, n, temperature=temperature, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, style=style, seed=seed, progress=progress)
    if scorer is not None:
        best, best_scores = best_by_score(scorer, records, groups)
    else:
        best = knockout(annotator, records, groups, seed, annotator_cache)
        best_scores = [None] * len(records)
    name = generator or f"best_of_{n}"
    return [{"instruction": r["instruction"], "input": r.get("input", ""), "output": groups[g][best[g]],
             "generator": name, "score": best_scores[g], "candidates": n} for g, r in enumerate(records)]


def run(cfg: Config) -> dict[str, Any]:
    """Sample cfg.n per prompt from cfg.policy, pick the best, write output_dir/model_outputs.json."""
    from pathlib import Path

    from farm.io import write_model_outputs
    from farm.methods.loop import write_metrics
    from farm.models.loading import load_causal_lm

    if bool(cfg.reward_model) == bool(cfg.annotator):
        raise FarmError("give exactly one of reward_model or annotator", field="reward_model")
    records = read_instructions(cfg.prompts)
    model, tok = load_causal_lm(cfg.policy, device=cfg.device)
    scorer = RewardModelScorer(cfg.reward_model, device=cfg.device, style=cfg.prompt_style) if cfg.reward_model else None
    outputs = best_of_n(model, tok, records, cfg.n, scorer, annotator=cfg.annotator or None,
                        annotator_cache=str(Path(cfg.output_dir) / "annotations.sqlite") if cfg.annotator else None,
                        temperature=cfg.temperature,
                        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, style=cfg.prompt_style, seed=cfg.seed,
                        generator=cfg.generator or None, progress=True)
    path = write_model_outputs(Path(cfg.output_dir) / "model_outputs.json", outputs)
    scores = [o["score"] for o in outputs if o["score"] is not None]
    metrics = {"outputs": str(path), "n_prompts": len(outputs), "n": cfg.n,
               "mean_best_score": sum(scores) / len(scores) if scores else None}
    write_metrics(cfg.output_dir, metrics)
    return metrics
