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
from typing import Any

from farm.errors import FarmError
from farm.methods.common import RewardModelScorer, Scorer, prompt_text, read_instructions


@dataclass
class Config:
    """`farm train best_of_n --config configs/train_best_of_n.yaml`"""

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
    style: str = "alpaca"
    """prompt format: alpaca or chat"""
    generator: str = ""
    """generator name written to the outputs (default: best_of_<n>)"""
    seed: int = 0
    """sampling and tournament seed"""
    device: str = "auto"
    """auto, cpu or cuda"""


def pick_best(scores: Sequence[float], n: int) -> list[int]:
    """Index (into the flat list) of the highest score in each consecutive group of n; ties → first.

    >>> pick_best([0.1, 0.9, 0.5, 2.0, 2.0, 1.0], 3)
    [1, 3]
    """
    return [g * n + max(range(n), key=lambda j: (scores[g * n + j], -j)) for g in range(len(scores) // n)]


def knockout(annotator, records: Sequence[dict], candidates: Sequence[Sequence[str]], seed: int = 0,
             cache_path: str | None = None, pick: str = "best") -> list[int]:
    """Winner index per record of a single-elimination tournament among its candidates, judged by `annotator`
    (an Annotator or a judge/pool name; p = P(output_2 better)) through `farm.annotators.annotate_pairs`
    (cached in `cache_path` if given). All matches of a round across records go to the judge in one batch.
    An invalid verdict keeps the first-shown candidate; an odd one out gets a bye. `pick="worst"`: the loser of
    each match goes on (a tournament for the worst candidate; with the same seed its first round is the same
    matches, so a cached judge is asked only for the later rounds)."""
    if pick not in ("best", "worst"):
        raise ValueError(f"pick must be 'best' or 'worst', got {pick!r}")
    import numpy as np

    from farm.annotators import annotate_pairs  # lazily: the judges' stack is not needed for scorer-based BoN
    from farm.types import Pair

    rng = np.random.default_rng(seed)
    alive = [list(range(len(c))) for c in candidates]
    round_ = 0
    while any(len(a) > 1 for a in alive):
        matches, pairs = [], []
        for r, a in enumerate(alive):
            for k in range(0, len(a) - 1, 2):
                i, j = (a[k], a[k + 1]) if rng.random() < 0.5 else (a[k + 1], a[k])  # random order shown
                matches.append((r, i, j))
                rec = records[r]
                pairs.append(Pair(rec["instruction"], candidates[r][i], candidates[r][j], input=rec.get("input", ""),
                                  id=f"bon-{r}-{round_}-{i}-{j}"))
        verdicts = annotate_pairs(pairs, annotator, seed=seed, cache_path=cache_path, progress=False)
        winners: dict[int, list[int]] = {r: [] for r in range(len(alive))}
        for (r, i, j), ann in zip(matches, verdicts):
            p = ann.preference
            second_wins = p is not None and p > 0.5
            winners[r].append(j if second_wins == (pick == "best") else i)
        alive = [winners[r] + (a[-1:] if len(a) % 2 else []) if len(a) > 1 else a for r, a in enumerate(alive)]
        round_ += 1
    return [a[0] for a in alive]


def best_of_n(model, tokenizer, records: Sequence[dict], n: int, scorer: Scorer | None = None, *, annotator=None,
              temperature: float = 1.0, max_new_tokens: int = 128, batch_size: int = 16, style: str = "alpaca",
              seed: int = 0, generator: str | None = None, progress: bool = False,
              annotator_cache: str | None = None) -> list[dict[str, Any]]:
    """For each record (instruction, input): sample n responses and keep the best by `scorer` (highest score)
    or by a knockout tournament judged by `annotator`. Returns AlpacaEval model_outputs records
    (instruction, input, output, generator) with `score` (the scorer's; None for a tournament), `candidates`."""
    from farm.models.generation import generate

    if (scorer is None) == (annotator is None):
        raise ValueError("give exactly one of scorer or annotator")
    prompts = [prompt_text(r, tokenizer, style) for r in records for _ in range(n)]
    texts = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                     batch_size=batch_size, seed=seed, progress=progress).texts
    groups = [texts[g * n:(g + 1) * n] for g in range(len(records))]
    if scorer is not None:
        scores = scorer.score([r for r in records for _ in range(n)], texts)
        best = [i - g * n for g, i in enumerate(pick_best(scores, n))]
        best_scores: list[float | None] = [scores[g * n + b] for g, b in enumerate(best)]
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
    from farm.methods.common import write_metrics
    from farm.models.loading import load_causal_lm

    if bool(cfg.reward_model) == bool(cfg.annotator):
        raise FarmError("give exactly one of reward_model or annotator", field="reward_model")
    records = read_instructions(cfg.prompts)
    model, tok = load_causal_lm(cfg.policy, device=cfg.device)
    scorer = RewardModelScorer(cfg.reward_model, device=cfg.device, style=cfg.style) if cfg.reward_model else None
    outputs = best_of_n(model, tok, records, cfg.n, scorer, annotator=cfg.annotator or None,
                        annotator_cache=str(Path(cfg.output_dir) / "annotations.sqlite") if cfg.annotator else None,
                        temperature=cfg.temperature,
                        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, style=cfg.style, seed=cfg.seed,
                        generator=cfg.generator or None, progress=True)
    path = write_model_outputs(Path(cfg.output_dir) / "model_outputs.json", outputs)
    scores = [o["score"] for o in outputs if o["score"] is not None]
    metrics = {"outputs": str(path), "n_prompts": len(outputs), "n": cfg.n,
               "mean_best_score": sum(scores) / len(scores) if scores else None}
    write_metrics(cfg.output_dir, metrics)
    return metrics
