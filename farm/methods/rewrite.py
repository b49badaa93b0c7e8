"""Prompt rewriting (BPO, "Black-Box Prompt Optimization", Cheng et al. 2023, https://arxiv.org/abs/2311.04155):
align a FROZEN policy by rewriting the user's prompt. A small rewriter is fine-tuned on (prompt → rewritten
prompt) pairs whose rewritten form makes the policy answer better; at inference every prompt is rewritten,
then answered by the unchanged policy. Details: docs/methods/rewrite.md.

Departures (the paper has an LLM write candidate rewrites from human preference data and keeps pairs an LLM
judge prefers): candidates are (1) fixed templates around the instruction (`templates`) and (2) instructions
borrowed from other prompts of the pool (`n_borrowed`; a paraphrase of the same task is a good rewrite, another
task a bad one); each candidate is judged by the scorer on the policy's answers to it, always measured against
the ORIGINAL prompt (a rewrite that changes the task loses); the rewriter learns the best candidate, or the
identity (taught as an empty rewrite = "keep") when nothing beats the original by `min_gain`, and a winner must win again on fresh answers
(`n_confirm`, against the winner's curse of picking the max of noisy estimates); only the instruction is
rewritten, the input is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.methods.data import prompt_text
from farm.methods.loop import TrainConfig
from farm.methods.scorers import Scorer

REWRITE_TEMPLATE = "### Rewrite the instruction so that it is answered well:\n{instruction}\n\n### Rewritten:\n"


@dataclass
class Config:
    """`farm train rewrite --config configs/train_rewrite.yaml`"""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style", "seed": "train.seed", "device": "train.device"}

    policy: str = ""
    """the frozen policy that answers (the SFT model)"""
    prompts: str = ""
    """instructions (instruction, input?) on which rewrite pairs are built"""
    output_dir: str = "runs/rewrite"
    """rewriter/ (the trained rewriter), pairs.jsonl, model_outputs.json and metrics.json go here"""
    reward_model: str = ""
    """scorer of the policy's answers (a sequence-classification folder); or pass a scorer to `run`"""
    eval_prompts: str = ""
    """prompts to rewrite and answer at the end: output_dir/model_outputs.json, in their order ('' = none)"""
    rewriter: str = ""
    """initial rewriter model ('' = a copy of the policy)"""
    templates: list[str] = field(default_factory=lambda: [
        "{instruction} Give only the answer.", "Task: {instruction}", "{instruction} Be exact."])
    """candidate rewrites around the instruction ({instruction} is replaced); the original is always a candidate"""
    n_borrowed: int = 4
    """candidates borrowed from other distinct instructions of `prompts`"""
    n_prompts: int = 200
    """prompts used to build pairs (the first ones of a seeded shuffle)"""
    n_answers: int = 2
    """answers sampled per candidate; a candidate's value is their mean score"""
    min_gain: float = 0.0
    """a rewrite must beat the original's mean score by more than this, else the pair teaches the identity"""
    n_confirm: int = 4
    """fresh answers to the winning rewrite and to the original that re-judge it (the max over many noisy
    candidates is biased upward: the winner's curse); it is kept only if it still wins; 0 = no check"""
    temperature: float = 1.0
    """sampling temperature of the answers that judge candidates"""
    eval_temperature: float = 0.7
    """sampling temperature of the final answers (0 = greedy)"""
    max_new_tokens: int = 32
    """answer length cap"""
    rewrite_max_new_tokens: int = 48
    """rewritten-instruction length cap (the rewriter decodes greedily)"""
    prompt_style: str = "alpaca"
    """prompt format of the policy: alpaca or chat"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, epochs=3.0, per_device_batch_size=16))
    """rewriter SFT settings (tiny models lr 1e-3); `train.seed` also seeds the candidate draws and the answer
    sampling, `train.device` runs the policy"""


def candidates(rec: dict, pool: Sequence[str], templates: Sequence[str], n_borrowed: int,
               rng: np.random.Generator) -> list[str]:
    """The original instruction first, then the templates, then `n_borrowed` other instructions of `pool`.

    >>> candidates({"instruction": "Add."}, ["Add.", "Sum."], ["{instruction} Now."], 1, np.random.default_rng(0))
    ['Add.', 'Add. Now.', 'Sum.']
    """
    out = [rec["instruction"]] + [t.format(instruction=rec["instruction"]) for t in templates]
    others = [p for p in pool if p not in out]
    picks = rng.choice(len(others), size=min(n_borrowed, len(others)), replace=False) if others else []
    return out + [others[int(i)] for i in picks]


def best_rewrite(cands: Sequence[str], values: Sequence[float], min_gain: float) -> tuple[str, float]:
    """(the candidate to learn, its gain over the original = cands[0]); the original unless one beats it by more
    than `min_gain` (ties → the earlier candidate).

    >>> best_rewrite(["a", "b", "c"], [0.5, 0.7, 0.7], 0.1), best_rewrite(["a", "b"], [0.5, 0.55], 0.1)
    (('b', 0.19999999999999996), ('a', 0.0))
    """
    j = max(range(len(cands)), key=lambda k: (values[k], -k))
    gain = values[j] - values[0]
    return (cands[j], gain) if gain > min_gain else (cands[0], 0.0)


def _answer(model, tok, records: Sequence[dict], cfg: Config, temperature: float, seed: int) -> list[str]:
    from farm.models.generation import generate

    prompts = [prompt_text(r, tok, cfg.prompt_style) for r in records]
    return generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens, temperature=max(temperature, 1e-6),
                    greedy=temperature <= 0, seed=seed).texts


def build_pairs(policy, tok, records: Sequence[dict], scorer: Scorer, cfg: Config) -> list[dict]:
    """One training pair per record: {instruction, input, rewrite, gain, values}, judged on the policy's answers
    to every candidate (n_answers each) scored against the original record."""
    rng = np.random.default_rng(cfg.train.seed)
    pool = sorted({r["instruction"] for r in records})
    cands = [candidates(r, pool, cfg.templates, cfg.n_borrowed, rng) for r in records]
    flat = [({**r, "instruction": c}, r) for r, cs in zip(records, cands) for c in cs for _ in range(cfg.n_answers)]
    texts = _answer(policy, tok, [f[0] for f in flat], cfg, cfg.temperature, cfg.train.seed + 1)
    scores = scorer.score([f[1] for f in flat], texts)  # judged against the ORIGINAL instruction
    pairs, k = [], 0
    for r, cs in zip(records, cands):
        vals = [float(np.mean(scores[k + j * cfg.n_answers:k + (j + 1) * cfg.n_answers])) for j in range(len(cs))]
        k += len(cs) * cfg.n_answers
        rewrite, gain = best_rewrite(cs, vals, cfg.min_gain)
        pairs.append({"instruction": r["instruction"], "input": r.get("input", ""), "rewrite": rewrite,
                      "gain": gain, "values": vals})
    return confirm(policy, tok, pairs, scorer, cfg) if cfg.n_confirm > 0 else pairs


def confirm(policy, tok, pairs: list[dict], scorer: Scorer, cfg: Config) -> list[dict]:
    """Re-judge each chosen rewrite against the original on `n_confirm` fresh answers each (another seed); a
    rewrite that no longer beats the original by `min_gain` becomes the identity. Adds `confirmed_gain`."""
    todo = [p for p in pairs if p["rewrite"] != p["instruction"]]
    n = cfg.n_confirm
    recs = [{"instruction": x, "input": p["input"]} for p in todo for x in (p["rewrite"], p["instruction"])
            for _ in range(n)]
    texts = _answer(policy, tok, recs, cfg, cfg.temperature, cfg.train.seed + 2)
    scores = scorer.score([{"instruction": p["instruction"], "input": p["input"]} for p in todo for _ in range(2 * n)],
                          texts)
    for i, p in enumerate(todo):
        new, old = np.mean(scores[2 * n * i:2 * n * i + n]), np.mean(scores[2 * n * i + n:2 * n * (i + 1)])
        p["confirmed_gain"] = float(new - old)
        if new - old <= cfg.min_gain:
            p["rewrite"], p["gain"] = p["instruction"], 0.0
    return pairs


def rewriter_examples(pairs: Sequence[dict]) -> list[dict]:
    """SFT records for the rewriter: the rewrite prompt (verbatim `prompt`) → the rewritten instruction, or
    the EMPTY answer (just EOS) when the original should stay: "keep" is one token to learn, where copying a
    prompt verbatim is hard for a small rewriter (and `rewrite_instructions` maps empty → the original).

    >>> [e["output"] for e in rewriter_examples([{"instruction": "a", "rewrite": "a"}, {"instruction": "a", "rewrite": "b"}])]
    ['', 'b']
    """
    return [{"prompt": REWRITE_TEMPLATE.format(instruction=p["instruction"]),
             "output": "" if p["rewrite"] == p["instruction"] else p["rewrite"]} for p in pairs]


def rewrite_instructions(rewriter, tok, records: Sequence[dict], max_new_tokens: int) -> list[str]:
    """The rewriter's (greedy) rewrite of each record's instruction; an empty rewrite keeps the original."""
    from farm.models.generation import generate

    prompts = [REWRITE_TEMPLATE.format(instruction=r["instruction"]) for r in records]
    texts = generate(rewriter, tok, prompts, max_new_tokens=max_new_tokens, greedy=True).texts
    return [t.strip() or r["instruction"] for t, r in zip(texts, records)]


def run(cfg: Config, scorer: Scorer | None = None) -> dict[str, Any]:
    """Build pairs on `prompts`, fine-tune the rewriter, and (with `eval_prompts`) write model_outputs.json:
    the frozen policy's answers to the rewritten prompts, recorded under the ORIGINAL instruction."""
    from farm.errors import FarmError
    from farm.io import write_model_outputs, write_records
    from farm.methods.data import read_instructions
    from farm.methods.loop import train_sft, write_metrics
    from farm.methods.scorers import RewardModelScorer
    from farm.models.loading import load_causal_lm, save_model

    if not cfg.policy or not cfg.prompts:
        raise FarmError("rewrite needs `policy` and `prompts`", field="policy" if not cfg.policy else "prompts")
    if scorer is None and not cfg.reward_model:
        raise FarmError("rewrite needs a scorer: set `reward_model`", field="reward_model")
    out = Path(cfg.output_dir)
    scorer = scorer or RewardModelScorer(cfg.reward_model, style=cfg.prompt_style, device=cfg.train.device)
    policy, tok = load_causal_lm(cfg.policy, device=cfg.train.device)
    records = read_instructions(cfg.prompts)
    order = np.random.default_rng(cfg.train.seed).permutation(len(records))[:cfg.n_prompts]
    pairs = build_pairs(policy, tok, [records[i] for i in order], scorer, cfg)
    write_records(out / "pairs.jsonl", pairs)
    rewriter, rtok = load_causal_lm(cfg.rewriter or cfg.policy, device="cpu")
    res = train_sft(rewriter, rtok, rewriter_examples(pairs), cfg.train, max_len=256, style=cfg.prompt_style)
    rewriter = res["model"]
    save_model(rewriter, rtok, out / "rewriter")
    metrics: dict[str, Any] = {"n_pairs": len(pairs), "rewritten_share": float(np.mean(
        [p["rewrite"] != p["instruction"] for p in pairs])), "mean_gain": float(np.mean([p["gain"] for p in pairs])),
        "rewriter_loss": res["loss"], "rewriter": str(out / "rewriter")}
    if cfg.eval_prompts:
        evals = read_instructions(cfg.eval_prompts)
        new = rewrite_instructions(rewriter, rtok, evals, cfg.rewrite_max_new_tokens)
        texts = _answer(policy, tok, [{**r, "instruction": n} for r, n in zip(evals, new)], cfg,
                        cfg.eval_temperature, cfg.train.seed + 7)
        direct = _answer(policy, tok, evals, cfg, cfg.eval_temperature, cfg.train.seed + 7)
        outs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": t, "generator": "rewrite",
                 "rewritten_instruction": n} for r, t, n in zip(evals, texts, new)]
        metrics["outputs"] = str(write_model_outputs(out / "model_outputs.json", outs))
        metrics.update(eval_rewritten_share=float(np.mean([n != r["instruction"] for r, n in zip(evals, new)])),
                       eval_score=float(np.mean(scorer.score(evals, texts))),
                       eval_score_direct=float(np.mean(scorer.score(evals, direct))))
    write_metrics(out, metrics)
    return metrics
