"""KTO: Kahneman-Tversky optimisation from per-answer desirable/undesirable labels, no pairs needed (Ethayarajh et
al. 2024, https://arxiv.org/abs/2402.01306; TRL's KTOTrainer). Implementation details: docs/methods/kto.md.

With r(x, y) = log π(y|x) − log π_ref(y|x) and the reference point z0 = max(0, KL estimate), the loss of one answer
is w_d (1 − σ(β (r − z0))) when it is desirable and w_u (1 − σ(β (z0 − r))) when it is not. z0 is estimated on
MISMATCHED (prompt, answer) pairs, r averaged over them, and carries no gradient (the paper, eq. 7).

Labels come from the data: pool verdicts (`labels_from: pairs`: a preference pair's winner is desirable, its loser
undesirable, ties dropped), a judge's absolute score (`labels_from: score`: every answer scored by `scorer`,
desirable at or above `desirable_threshold`, the median by default), or records that carry them (`label`).

Departures (each on purpose): z0 is estimated over the whole optimiser step (all micro-batches, all processes;
`loop.fit`'s `prepare_step`), so gradient accumulation and processes do not change the update, where TRL
estimates it per micro-batch; each answer's mismatched partner is the answer of the nearest previous example in
file order with another prompt (TRL rotates within each batch), so reference log-probs of both are computed once,
up front; a step of one micro-batch on one process scores an answer and its partner after ONE pass of their prompt
(`shared_prefix.continuation_logprobs`, the partner as a constant).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from farm.errors import FarmError
from farm.methods.data import collate_rows, prompt_text, read_preferences, tokenize_pairs
from farm.methods.loop import TrainConfig, finish_run, fit
from farm.methods.pairs import precompute_reference
from farm.methods.rollout import disable_dropout, sequence_logprobs
from farm.methods.scorers import RewardSpec
from farm.models.shared_prefix import continuation_logprobs

KEYS = ("completion", "kl_completion")


def kto_loss(logratios: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-answer KTO loss. logratios r = log π − log π_ref (B,), desirable (B,) bool, z0 () detached → (B,)."""
    # Value of a gain above the reference point (desirable) or a loss below it (undesirable)
    gain = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0)))  # (B,)
    loss = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios)))  # (B,)
    return torch.where(desirable, gain, loss)


def reference_point(logratios_mismatched: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean of r over mismatched pairs), no gradient (eq. 7's biased estimate of KL(π‖π_ref)).

    >>> round(reference_point(torch.tensor([0.5, -0.1, 0.2])).item(), 6), reference_point(torch.tensor([-1.0])).item()
    (0.2, 0.0)
    """
    return logratios_mismatched.detach().float().mean().clamp(min=0)


@dataclass
class Config:
    """`farm train kto --config configs/train_kto.yaml` or `farm.methods.kto.run(Config(...))`."""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style"}

    policy: str = ""
    """path of the starting policy (usually the SFT model); also the reference unless `reference` is set"""
    preferences: str = ""
    """the answers: preference annotations or chosen/rejected records (`labels_from: pairs` or `score`), or
    records with a prompt/instruction, a `completion` (or `output`) and a boolean `label` (`labels_from: label`)"""
    output_dir: str = "runs/kto"
    """where `model/`, `metrics.json`, `metrics.jsonl` and the resumable `checkpoint/` go"""
    reference: str = ""
    """path of the frozen reference policy ('' = the starting policy)"""
    labels_from: str = "pairs"
    """pairs (a pair's winner desirable, its loser not), score (a judge's absolute score vs a threshold), label"""
    scorer: RewardSpec = field(default_factory=RewardSpec)
    """with labels_from: score, what scores every answer: `scorer.model` (a reward model) or `scorer.function`"""
    desirable_threshold: float | None = None
    """with labels_from: score, an answer scoring at least this is desirable (None = the median score)"""
    beta: float = 0.1
    """β of the implicit reward (TRL's default 0.1)"""
    desirable_weight: float = 1.0
    """λ_D; the paper keeps λ_D n_D / (λ_U n_U) in [1, 4/3]"""
    undesirable_weight: float = 1.0
    """λ_U"""
    max_prompt_tokens: int = 192
    """prompts are cut from the left to this many tokens"""
    max_response_tokens: int = 64
    """answers are cut from the right to this many tokens (EOS is then missing)"""
    prompt_style: str = "alpaca"
    """alpaca or chat"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, schedule="constant", warmup_ratio=0.0,
                                                                   epochs=2.0, per_device_batch_size=32))
    """optimisation and loop settings (tiny models lr 1e-4, 2 epochs, 32 answers per step; a 7B ~5e-7)"""

    def __post_init__(self):
        if self.labels_from not in ("pairs", "score", "label"):
            raise ValueError(f"labels_from must be pairs, score or label, got {self.labels_from!r}")


# ----- labels -----


def labelled_answers(cfg: Config, tokenizer=None) -> list[dict]:
    """{prompt, completion, label} per answer, from `cfg.preferences` as `cfg.labels_from` says."""
    from farm.io import get_field, read_records

    if cfg.labels_from == "label":
        out = []
        for i, r in enumerate(read_records(cfg.preferences), 1):
            text = r["completion"] if "completion" in r else get_field(r, "output", cfg.preferences, i)
            label = r.get("label")
            if not isinstance(label, bool):
                raise FarmError(f"label must be true or false, got {label!r}", file=cfg.preferences, line=i,
                                field="label")
            out.append({"prompt": prompt_text(r, tokenizer, cfg.prompt_style), "completion": text, "label": label})
        return out
    triples = read_preferences(cfg.preferences)
    if cfg.labels_from == "pairs":
        return [{"prompt": prompt_text(t, tokenizer, cfg.prompt_style), "completion": t[key], "label": key == "chosen"}
                for t in triples for key in ("chosen", "rejected")]
    return scored_answers(triples, cfg, tokenizer)


def scored_answers(triples: Sequence[dict], cfg: Config, tokenizer=None) -> list[dict]:
    """Every distinct answer of `triples` scored by `cfg.scorer`; desirable at or above the threshold."""
    import numpy as np

    from farm.methods.scorers import FunctionScorer, RewardModelScorer, import_function

    if cfg.scorer.judge or not (cfg.scorer.model or cfg.scorer.function):
        raise FarmError("labels_from: score needs an absolute score: `scorer.model` or `scorer.function`",
                        field="scorer.model", hint="a pairwise judge's verdicts: use labels_from: pairs")
    scorer = (FunctionScorer(import_function(cfg.scorer.function, "scorer.function")) if cfg.scorer.function
              else RewardModelScorer(cfg.scorer.model, style=cfg.prompt_style, device=cfg.train.device))
    seen: dict[tuple, dict] = {}
    for t in triples:
        for key in ("chosen", "rejected"):
            seen.setdefault((t.get("prompt", ""), t["instruction"], t.get("input", ""), t[key]), {**t, "output": t[key]})
    answers = list(seen.values())
    scores = scorer.score(answers, [a["output"] for a in answers])
    threshold = float(np.median(scores)) if cfg.desirable_threshold is None else cfg.desirable_threshold
    return [{"prompt": prompt_text(a, tokenizer, cfg.prompt_style), "completion": a["output"], "label": s >= threshold,
             "score": s} for a, s in zip(answers, scores)]


def with_mismatched(examples: Sequence[dict]) -> list[dict]:
    """Each example with `kl_completion` = the answer of the nearest previous example (cyclically) whose prompt
    differs: a mismatched pair for z0. Answers labelled from pairs come as (winner, loser) of one prompt, so the
    plain previous answer would be the same prompt's other answer half of the time; with one prompt only, the
    previous answer.

    >>> [e["kl_completion"] for e in with_mismatched([{"completion": "a"}, {"completion": "b"}, {"completion": "c"}])]
    ['c', 'a', 'b']
    >>> ex = [{"prompt": p, "completion": c} for p, c in (("p", "a"), ("p", "b"), ("q", "c"), ("q", "d"))]
    >>> [e["kl_completion"] for e in with_mismatched(ex)]
    ['d', 'd', 'b', 'b']
    """
    n = len(examples)

    def partner(i: int) -> int:
        prompt = examples[i].get("prompt")
        return next((j for j in ((i - k) % n for k in range(1, n)) if examples[j].get("prompt") != prompt),
                    (i - 1) % n)

    return [{**e, "kl_completion": examples[partner(i)]["completion"]} for i, e in enumerate(examples)]


# ----- training -----


def _rows(tokenizer, examples: Sequence[dict], slot: int) -> dict:
    """Prompt + answer rows of slot 1 (the answers) or 2 (the mismatched answers) of tokenized examples."""
    return collate_rows(tokenizer, [e["tokens"][0] for e in examples], [e["tokens"][slot] for e in examples])


def train(model, tokenizer, examples: Sequence[dict], cfg: Config, ref_model=None,
          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train `model` in place on {prompt, completion, label} examples. Reference log-probs of every answer and its
    mismatched partner are computed first (from `ref_model`, or `model` before any update). Returns `fit`'s dict."""
    disable_dropout(model)  # the reference numbers come from an eval-mode forward: same forward when training
    if "kl_completion" not in examples[0]:
        examples = with_mismatched(examples)
    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, cfg.max_prompt_tokens, cfg.max_response_tokens, KEYS)
    if "ref" not in examples[0]:
        examples = precompute_reference(ref_model if ref_model is not None else model, tokenizer, examples, keys=KEYS)

    def make_batch(chunk: list) -> tuple[dict, float]:
        kl = {f"kl_{k}": v for k, v in _rows(tokenizer, chunk, 2).items()}
        ref = torch.tensor([e["ref"] for e in chunk], dtype=torch.float32)  # (b, 2)
        return {**_rows(tokenizer, chunk, 1), **kl, "ref": ref,
                "label": torch.tensor([bool(e["label"]) for e in chunk])}, float(len(chunk))

    def prepare_step(model, batches: list[dict], acc) -> None:
        """z0 of the whole step: Σ r over every mismatched pair of every micro-batch and process / their count.
        A step of one micro-batch on one process leaves it to `loss_fn`, which scores the mismatched answers
        after the prompt pass of the answers (the same prompts): the same z0, without a second prompt pass."""
        if len(batches) == 1 and acc.num_processes == 1 and not cfg.train.gradient_checkpointing:
            batches[0]["z0"] = None
            return
        total = torch.zeros(2, device=acc.device)
        with torch.no_grad():
            for b in batches:
                kl = {k[3:]: b[k].to(acc.device) for k in b if k.startswith("kl_")}
                r = sequence_logprobs(model, kl) - b["ref"][:, 1].to(acc.device)
                total += torch.stack([r.sum(), torch.tensor(float(len(r)), device=acc.device)])
        total = acc.reduce(total, "sum")
        z0 = reference_point(total[0:1] / total[1])
        for b in batches:
            b["z0"] = z0

    def loss_fn(model, b: dict):
        if b["z0"] is None:  # one prompt pass: the answers with gradient, their mismatched partners as constants
            lp, lp_kl = continuation_logprobs(model, b["prompt_ids"], b["prompt_mask"],
                                              [(b["response_ids"], b["response_mask"]),
                                               (b["kl_response_ids"], b["kl_response_mask"])], detached=1)
            r = (lp * b["response_mask"]).sum(-1) - b["ref"][:, 0]  # (b,)
            b["z0"] = reference_point((lp_kl * b["kl_response_mask"]).sum(-1) - b["ref"][:, 1])
        else:
            r = sequence_logprobs(model, b) - b["ref"][:, 0]  # (b,)
        losses = kto_loss(r, b["label"], b["z0"], cfg.beta, cfg.desirable_weight, cfg.undesirable_weight)
        with torch.no_grad():  # the implicit reward β r should rise on desirable answers and fall on the others
            sign = b["label"].float() * 2 - 1  # (b,) ±1
            stats = {"z0": b["z0"].item(), "desirable_share": b["label"].float().mean().item(),
                     "signed_reward": (cfg.beta * r * sign).mean().item()}
        return losses.sum(), stats

    return fit(model, tokenizer, examples, make_batch, loss_fn, cfg.train, out_dir=out_dir, desc="kto",
               prepare_step=prepare_step)


def run(cfg: Config) -> dict[str, Any]:
    """Read and label `cfg.preferences`, train from `cfg.policy`, write `model/`, `metrics.json` and
    `metrics.jsonl` (one row per step) under `cfg.output_dir`; a re-run resumes from `checkpoint/`."""
    from farm.io import atomic_write_text
    from farm.models.loading import load_causal_lm

    if not cfg.policy or not cfg.preferences:
        raise FarmError("kto needs `policy` and `preferences`", field="policy" if not cfg.policy else "preferences")
    torch.manual_seed(cfg.train.seed)
    model, tok = load_causal_lm(cfg.policy, device=cfg.train.device, dtype=cfg.train.dtype)
    examples = labelled_answers(cfg, tok)
    n_desirable = sum(e["label"] for e in examples)
    if not examples or n_desirable in (0, len(examples)):
        raise FarmError(f"kto needs desirable AND undesirable answers, got {n_desirable} of {len(examples)}",
                        file=cfg.preferences, hint="check labels_from and desirable_threshold")
    ref_model = None
    if cfg.reference:
        ref_model, _ = load_causal_lm(cfg.reference, device=cfg.train.device, dtype=cfg.train.dtype, tokenizer=tok)
    examples = tokenize_pairs(tok, with_mismatched(examples), cfg.max_prompt_tokens, cfg.max_response_tokens, KEYS)
    examples = precompute_reference(ref_model if ref_model is not None else model, tok, examples, keys=KEYS)
    del ref_model  # reference log-probs are cached
    result = train(model, tok, examples, cfg, out_dir=cfg.output_dir)
    out = Path(cfg.output_dir)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in result["history"]))
    return finish_run(out, result, tok, {"method": "kto", "answers": len(examples), "desirable": n_desirable})

