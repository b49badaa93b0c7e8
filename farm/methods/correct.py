"""Answer correction (Aligner, Ji et al. 2024, https://arxiv.org/abs/2402.02416): a small corrector, trained
with SFT to turn a weak answer into a preferred one, is stacked on a FROZEN policy: the policy answers, the
corrector rewrites the answer. Details: docs/methods/correct.md.

Training pairs come from preference data: (prompt + rejected answer → chosen answer). As the paper's warm-up,
a share of identity pairs (prompt + chosen → chosen) teaches the corrector to leave good answers alone.

Departures: the warm-up is not a separate stage, identity pairs are mixed into one SFT run (`identity_share`);
the corrector decodes greedily; nothing checks that a correction is better (that is the point of the method:
no judge at inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from farm.methods.loop import TrainConfig

CORRECT_TEMPLATE = ("### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Draft answer:\n{answer}\n\n"
                    "### Improved answer:\n")


@dataclass
class Config:
    """`farm train correct --config configs/train_correct.yaml`"""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style", "seed": "train.seed", "device": "train.device"}

    policy: str = ""
    """the frozen policy whose answers are corrected (the SFT model)"""
    preferences: str = ""
    """preference pairs (annotations with output_1/2 + p_output_2, or chosen/rejected)"""
    output_dir: str = "runs/correct"
    """corrector/, model_outputs.json and metrics.json go here"""
    eval_prompts: str = ""
    """prompts to answer and correct at the end: output_dir/model_outputs.json, in their order ('' = none)"""
    corrector: str = ""
    """initial corrector model ('' = a copy of the policy)"""
    identity_share: float = 0.5
    """identity pairs (chosen → chosen) added per correction pair (Aligner's warm-up)"""
    reward_model: str = ""
    """optional scorer to report the mean score of drafts and corrections on eval_prompts ('' = no report)"""
    max_len: int = 256
    """tokens per training example (prompt + draft + answer)"""
    eval_temperature: float = 0.7
    """sampling temperature of the policy's drafts (0 = greedy)"""
    max_new_tokens: int = 32
    """draft and correction length cap"""
    prompt_style: str = "alpaca"
    """prompt format of the policy: alpaca or chat"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, epochs=3.0, per_device_batch_size=16))
    """corrector SFT settings (tiny models lr 1e-3); `train.seed` also seeds the identity-pair choice and the
    drafts, `train.device` runs the policy"""


def correction_prompt(instruction: str, input: str, answer: str) -> str:
    """What the corrector sees.

    >>> correction_prompt("Add.", "1 + 2", "4").splitlines()[-3:]
    ['4', '', '### Improved answer:']
    """
    return CORRECT_TEMPLATE.format(instruction=instruction, input=input, answer=answer)


def correction_examples(triples: Sequence[dict], identity_share: float, seed: int) -> list[dict]:
    """SFT records {prompt, output}: every (rejected → chosen), plus identity (chosen → chosen) for a seeded
    round(identity_share · n) of the triples.

    >>> ex = correction_examples([{"instruction": "i", "chosen": "c", "rejected": "r"}], 1.0, 0)
    >>> [(e["prompt"].split("### Draft answer:\\n")[1][0], e["output"]) for e in ex]
    [('r', 'c'), ('c', 'c')]
    """
    out = [{"prompt": correction_prompt(t["instruction"], t.get("input", ""), t["rejected"]), "output": t["chosen"]}
           for t in triples]
    k = min(len(triples), int(round(identity_share * len(triples))))
    for i in np.random.default_rng(seed).choice(len(triples), size=k, replace=False):
        t = triples[int(i)]
        out.append({"prompt": correction_prompt(t["instruction"], t.get("input", ""), t["chosen"]),
                    "output": t["chosen"]})
    return out


def correct_answers(corrector, tok, records: Sequence[dict], drafts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The corrector's greedy correction of each draft (an empty correction keeps the draft)."""
    from farm.models.generation import generate

    prompts = [correction_prompt(r["instruction"], r.get("input", ""), d) for r, d in zip(records, drafts)]
    texts = generate(corrector, tok, prompts, max_new_tokens=max_new_tokens, greedy=True).texts
    return [t or d for t, d in zip(texts, drafts)]


def run(cfg: Config) -> dict[str, Any]:
    """Train the corrector on `preferences`; with `eval_prompts`, draft with the policy, correct, and write
    model_outputs.json (records carry the `draft` too)."""
    from farm.errors import FarmError
    from farm.io import write_model_outputs
    from farm.methods.data import prompt_text, read_instructions, read_preferences
    from farm.methods.loop import train_sft, write_metrics
    from farm.methods.scorers import RewardModelScorer
    from farm.models.generation import generate
    from farm.models.loading import load_causal_lm, save_model

    if not cfg.policy or not cfg.preferences:
        raise FarmError("correct needs `policy` and `preferences`",
                        field="policy" if not cfg.policy else "preferences")
    out = Path(cfg.output_dir)
    examples = correction_examples(read_preferences(cfg.preferences), cfg.identity_share, cfg.train.seed)
    corrector, ctok = load_causal_lm(cfg.corrector or cfg.policy, device="cpu")
    res = train_sft(corrector, ctok, examples, cfg.train, max_len=cfg.max_len, style=cfg.prompt_style)
    corrector = res["model"]
    save_model(corrector, ctok, out / "corrector")
    metrics: dict[str, Any] = {"n_examples": len(examples), "corrector_loss": res["loss"],
                               "corrector": str(out / "corrector")}
    if cfg.eval_prompts:
        policy, tok = load_causal_lm(cfg.policy, device=cfg.train.device)
        evals = read_instructions(cfg.eval_prompts)
        drafts = generate(policy, tok, [prompt_text(r, tok, cfg.prompt_style) for r in evals],
                          max_new_tokens=cfg.max_new_tokens, temperature=max(cfg.eval_temperature, 1e-6),
                          greedy=cfg.eval_temperature <= 0, seed=cfg.train.seed + 7).texts
        fixed = correct_answers(corrector.to(policy.device), ctok, evals, drafts, cfg.max_new_tokens)
        outs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": f, "generator": "correct",
                 "draft": d} for r, f, d in zip(evals, fixed, drafts)]
        metrics["outputs"] = str(write_model_outputs(out / "model_outputs.json", outs))
        metrics["changed_share"] = float(np.mean([f != d for f, d in zip(fixed, drafts)]))
        if cfg.reward_model:
            scorer = RewardModelScorer(cfg.reward_model, style=cfg.prompt_style, device=cfg.train.device)
            metrics.update(eval_score=float(np.mean(scorer.score(evals, fixed))),
                           eval_score_draft=float(np.mean(scorer.score(evals, drafts))))
    write_metrics(out, metrics)
    return metrics
