"""Offline preference pairs on the floor: a `PairLoss` (a per-pair loss and how it wants its log-probs), reference
log-probs computed once up front, the per-micro-batch pair loss and `train_pairs` (through `loop.fit`). DPO and
online DPO train with it; the losses themselves are DPO's (`dpo.LOSSES`, in plain sight where DPO is read).

Chosen and rejected responses go through ONE forward pass (2B rows: left-padded prompt + right-padded response,
position ids from the mask, EOS at the end). The loss of an optimiser step is Σ(per-pair loss) / (pairs in the
step), so gradient accumulation gives the same gradient as one big batch (tests/test_methods_zoo2.py: 1×8 = 8×1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from farm.methods.data import collate_pairs, tokenize_pairs
from farm.methods.loop import TrainConfig, fit
from farm.methods.rollout import disable_dropout, sequence_logprobs


@dataclass(frozen=True)
class PairLoss:
    """A pairwise loss and how it wants its log-probs."""

    fn: Callable[..., torch.Tensor]
    """(chosen, rejected, ref_chosen, ref_rejected, beta, margin, label_smoothing) → per-pair loss (B,)"""
    length_normalised: bool = False
    """feed average (not summed) per-token log-probs"""
    uses_reference: bool = True
    """needs reference log-probs (False: no reference model is loaded)"""


@torch.no_grad()
def precompute_reference(ref_model, tokenizer, examples: Sequence[dict], loss: PairLoss | None = None,
                         max_prompt_tokens: int = 192, max_response_tokens: int = 64, batch_size: int = 32,
                         keys: tuple[str, str] = ("chosen", "rejected")) -> list[dict]:
    """Each example with `ref` = [log π_ref(first response), log π_ref(second)] (`keys`: chosen and rejected, or
    KTO's completion and mismatched completion) added, computed once in eval mode (zeros for a reference-free
    loss; summed log-probs when `loss` is None); examples are tokenized first if they are not yet."""
    loss = loss or PairLoss(lambda *a, **k: None)
    if not loss.uses_reference:
        return [{**e, "ref": [0.0, 0.0]} for e in examples]
    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, max_prompt_tokens, max_response_tokens, keys)
    device = next(ref_model.parameters()).device
    was_training = ref_model.training
    ref_model.eval()
    out = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        b = {k: v.to(device) for k, v in collate_pairs(tokenizer, chunk).items()}
        lp = sequence_logprobs(ref_model, b, loss.length_normalised).cpu()
        out += [{**e, "ref": [lp[i].item(), lp[len(chunk) + i].item()]} for i, e in enumerate(chunk)]
    ref_model.train(was_training)
    return out


def pair_loss_sum(model, batch: dict, loss: PairLoss, beta: float, margin: float = 0.0, nll_weight: float = 0.0,
                  label_smoothing: float = 0.0, shared_prefix: bool = False) -> tuple[torch.Tensor, dict]:
    """Σ per-pair loss over the micro-batch (the loop divides by the pairs in the whole step) and mean stats;
    `nll_weight` α adds α · (−log π(chosen) / |chosen|) per pair (RPO)."""
    lp = sequence_logprobs(model, batch, loss.length_normalised, shared_prefix)
    B = lp.shape[0] // 2
    chosen, rejected, ref = lp[:B], lp[B:], batch["ref"]  # (B,), (B,), (B, 2)
    losses = loss.fn(chosen, rejected, ref[:, 0], ref[:, 1], beta=beta, margin=margin,
                     label_smoothing=label_smoothing)  # (B,)
    if nll_weight:
        lp_sum = lp if not loss.length_normalised else sequence_logprobs(model, batch, False, shared_prefix)
        n_tok = batch["response_mask"][:B].sum(-1).clamp(min=1)  # (B,) tokens of each chosen response
        losses = losses + nll_weight * (-lp_sum[:B] / n_tok)  # per-token NLL of chosen (B,)
    with torch.no_grad():
        r_c, r_r = beta * (chosen - ref[:, 0]), beta * (rejected - ref[:, 1])  # implicit rewards
        stats = {"reward_margin": (r_c - r_r).mean().item(), "accuracy": (r_c > r_r).float().mean().item(),
                 "logp_chosen": chosen.mean().item(), "logp_rejected": rejected.mean().item(),
                 "reward_chosen": r_c.mean().item(), "reward_rejected": r_r.mean().item()}
    return losses.sum(), stats


def train_pairs(model, tokenizer, examples: Sequence[dict], loss: PairLoss, tc: TrainConfig, *, beta: float,
                margin: float = 0.0, nll_weight: float = 0.0, label_smoothing: float = 0.0, max_prompt_tokens: int = 192,
                max_response_tokens: int = 64, ref_model=None, out_dir: str | Path | None = None,
                desc: str = "pairs", shared_prefix: bool = False) -> dict[str, Any]:
    """Train `model` in place on examples {prompt, chosen, rejected} (strings; `ref` optional: precomputed
    reference log-probs [chosen, rejected]). Without `ref`, they are computed first from `ref_model`, or from
    `model` itself before any update. Returns `loop.fit`'s result (steps, loss, history, model)."""
    disable_dropout(model)  # the reference numbers come from an eval-mode forward: same forward when training
    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, max_prompt_tokens, max_response_tokens)
    if "ref" not in examples[0]:
        examples = precompute_reference(ref_model if ref_model is not None else model, tokenizer, examples, loss)

    def make_batch(chunk: list) -> tuple[dict, float]:
        return collate_pairs(tokenizer, chunk), float(len(chunk))

    return fit(model, tokenizer, examples, make_batch,
               lambda m, b: pair_loss_sum(m, b, loss, beta, margin, nll_weight, label_smoothing, shared_prefix), tc,
               out_dir=out_dir, desc=desc)
