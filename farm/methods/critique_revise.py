"""Critique and revise, n rounds (Constitutional AI's supervised stage, Bai et al. 2022,
https://arxiv.org/abs/2212.08073; Self-Refine, Madaan et al. 2023, https://arxiv.org/abs/2303.17651): the policy
answers, a critic says what is wrong, the policy revises; repeat. Inference only, with any policy and any judge
(a `Scorer` such as a reward model, or an `Annotator` such as a simulated or LLM judge). Details:
docs/methods/critique_revise.md.

Two kinds of critique (`critique`):
- `model`: the policy writes a critique with `critique_prompt`, then revisions with `revision_prompt`, which sees
  the answer and the critique (an instruct model; the Constitutional AI recipe);
- `judge`: the critique is the judge's verdict (a tiny policy cannot write or read critiques); revisions are
  fresh attempts from the task prompt, or from `revision_prompt` if set.
Each round samples `n_revisions` revisions per prompt; the judge picks the best (highest score, or a knockout
tournament), and it replaces the current answer only if the judge prefers it to the current answer.

Departures: the acceptance test is ours (Constitutional AI keeps every revision); without it a weak reviser
makes answers worse round after round. With `critique: judge` and a plain prompt the method is a sequential,
judge-gated best-of-(1 + rounds·n_revisions): said so on purpose, it is the honest tiny-model limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.methods.data import prompt_text
from farm.methods.scorers import Scorer, best_by_score, knockout

CRITIQUE_PROMPT = ("Here is a request and an answer.\n\nRequest: {instruction}\n{input}\n\nAnswer: {answer}\n\n"
                   "Point out what is wrong or missing in the answer, briefly.")
REVISION_PROMPT = ("Request: {instruction}\n{input}\n\nAnswer: {answer}\n\nCritique: {critique}\n\n"
                   "Rewrite the answer so that it fixes every point of the critique. Reply with the answer only.")


@dataclass
class Config:
    """`farm train critique_revise --config configs/train_critique_revise.yaml`"""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style"}

    policy: str = ""
    """the policy that answers, critiques (critique: model) and revises"""
    eval_prompts: str = ""
    """prompts to answer: output_dir/model_outputs.json, in their order"""
    output_dir: str = "runs/critique_revise"
    """model_outputs.json, rounds.jsonl (every round's answers and verdicts) and metrics.json go here"""
    reward_model: str = ""
    """judge as a scorer (a sequence-classification folder); give this or `annotator`"""
    annotator: str = ""
    """judge as an annotator name or folder (farm.annotators.load_annotator); verdicts cached in the output dir"""
    critique: str = "judge"
    """judge (the verdict is the critique) or model (the policy writes one with critique_prompt)"""
    critique_prompt: str = CRITIQUE_PROMPT
    """template with {instruction} {input} {answer} (critique: model)"""
    revision_prompt: str = ""
    """template with {instruction} {input} {answer} {critique}; '' = a fresh attempt from the task prompt
    (critique: judge) or REVISION_PROMPT (critique: model)"""
    rounds: int = 2
    """critique-and-revise rounds"""
    n_revisions: int = 4
    """revisions sampled per prompt and round (the judge keeps the best)"""
    temperature: float = 1.0
    """sampling temperature of critiques and revisions"""
    eval_temperature: float = 0.7
    """sampling temperature of the first answer (0 = greedy)"""
    max_new_tokens: int = 32
    """answer (and critique) length cap"""
    prompt_style: str = "alpaca"
    """prompt format: alpaca or chat (critique/revision prompts go through the same format as instructions)"""
    seed: int = 0
    """sampling and judging seed"""
    device: str = "auto"
    """auto, cpu or cuda"""

    def __post_init__(self):
        if self.critique not in ("judge", "model"):
            raise ValueError(f"critique must be judge or model, got {self.critique!r}")


class Judge:
    """A Scorer or an Annotator behind one interface: `best` of candidates, and `prefers_new` over the current."""

    def __init__(self, scorer: Scorer | None = None, annotator=None, seed: int = 0, cache: str | None = None):
        if (scorer is None) == (annotator is None):
            raise ValueError("give exactly one of scorer or annotator")
        self.scorer, self.annotator, self.seed, self.cache = scorer, annotator, seed, cache

    def best(self, records: Sequence[dict], groups: Sequence[Sequence[str]]) -> list[int]:
        if self.scorer is None:
            return knockout(self.annotator, records, groups, self.seed, self.cache)
        return best_by_score(self.scorer, records, groups)[0]

    def prefers_new(self, records: Sequence[dict], current: Sequence[str], new: Sequence[str]) -> list[float]:
        """P(new better than current) per record: a 0/1 score comparison or the annotator's verdict (invalid =
        keep the current answer)."""
        if self.scorer is not None:
            a, b = self.scorer.score(records, current), self.scorer.score(records, new)
            return [1.0 if y > x else 0.0 for x, y in zip(a, b)]
        from farm.annotators import annotate_pairs
        from farm.types import Pair

        pairs = [Pair(r["instruction"], c, n, input=r.get("input", "")) for r, c, n in zip(records, current, new)]
        anns = annotate_pairs(pairs, self.annotator, seed=self.seed, cache_path=self.cache, progress=False)
        return [0.0 if a.preference is None else float(a.preference) for a in anns]


def verdict_critique(p_new: float) -> str:
    """The judge's verdict as a critique (what a tiny policy can be given).

    >>> verdict_critique(0.2)
    'A judge preferred the previous answer; it still has problems.'
    """
    return ("A judge preferred the revision over the previous answer." if p_new > 0.5 else
            "A judge preferred the previous answer; it still has problems.")


def critique_revise(policy, tok, records: Sequence[dict], judge: Judge, cfg: Config) -> tuple[list[str], list[dict]]:
    """(final answers, one log row per round with acceptance rate) for `records`."""
    from farm.models.generation import generate

    def sample(prompts: list[str], temperature: float, seed: int) -> list[str]:
        return generate(policy, tok, prompts, max_new_tokens=cfg.max_new_tokens, temperature=max(temperature, 1e-6),
                        greedy=temperature <= 0, seed=seed).texts

    def formatted(template: str, r: dict, **kw) -> str:
        return prompt_text({"instruction": template.format(instruction=r["instruction"],
                                                           input=r.get("input", ""), **kw)}, tok, cfg.prompt_style)

    answers = sample([prompt_text(r, tok, cfg.prompt_style) for r in records], cfg.eval_temperature, cfg.seed + 7)
    critiques = ["" for _ in records]
    log: list[dict] = []
    template = cfg.revision_prompt or (REVISION_PROMPT if cfg.critique == "model" else "")
    for k in range(1, cfg.rounds + 1):
        if cfg.critique == "model":
            critiques = sample([formatted(cfg.critique_prompt, r, answer=a) for r, a in zip(records, answers)],
                               cfg.temperature, cfg.seed + 100 * k)
        prompts = [formatted(template, r, answer=a, critique=c) if template else prompt_text(r, tok, cfg.prompt_style)
                   for r, a, c in zip(records, answers, critiques)]
        n = cfg.n_revisions
        texts = sample([p for p in prompts for _ in range(n)], cfg.temperature, cfg.seed + 100 * k + 1)
        groups = [texts[i * n:(i + 1) * n] for i in range(len(records))]
        best = [g[j] for g, j in zip(groups, judge.best(records, groups))]
        p_new = judge.prefers_new(records, answers, best)
        accepted = [p > 0.5 and b != a for p, a, b in zip(p_new, answers, best)]
        answers = [b if ok else a for ok, a, b in zip(accepted, answers, best)]
        if cfg.critique == "judge":
            critiques = [verdict_critique(p) for p in p_new]
        log.append({"round": k, "accepted": float(np.mean(accepted)), "answers": list(answers),
                    "critiques": list(critiques)})
    return answers, log


def run(cfg: Config, scorer: Scorer | None = None, annotator=None) -> dict[str, Any]:
    """Answer `eval_prompts` with critique-and-revise; write model_outputs.json, rounds.jsonl, metrics.json."""
    from farm.errors import FarmError
    from farm.io import write_model_outputs, write_records
    from farm.methods.data import read_instructions
    from farm.methods.loop import write_metrics
    from farm.methods.scorers import RewardModelScorer
    from farm.models.loading import load_causal_lm

    if not cfg.policy or not cfg.eval_prompts:
        raise FarmError("critique_revise needs `policy` and `eval_prompts`",
                        field="policy" if not cfg.policy else "eval_prompts")
    given = sum(x is not None and x != "" for x in (scorer, annotator, cfg.reward_model or None,
                                                      cfg.annotator or None))
    if given != 1:
        raise FarmError("critique_revise needs exactly one judge: reward_model or annotator", field="reward_model")
    out = Path(cfg.output_dir)
    if cfg.reward_model:
        scorer = RewardModelScorer(cfg.reward_model, style=cfg.prompt_style, device=cfg.device)
    judge = Judge(scorer, annotator or cfg.annotator or None, seed=cfg.seed,
                  cache=str(out / "annotations.sqlite") if (annotator or cfg.annotator) else None)
    policy, tok = load_causal_lm(cfg.policy, device=cfg.device)
    records = read_instructions(cfg.eval_prompts)
    answers, log = critique_revise(policy, tok, records, judge, cfg)
    write_records(out / "rounds.jsonl", log)
    outs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": a,
             "generator": "critique_revise"} for r, a in zip(records, answers)]
    metrics = {"outputs": str(write_model_outputs(out / "model_outputs.json", outs)), "rounds": cfg.rounds,
               "accepted_per_round": [row["accepted"] for row in log]}
    write_metrics(out, metrics)
    return metrics
