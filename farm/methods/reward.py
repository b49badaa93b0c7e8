"""Reward model: a scalar head on a language model, trained on preference pairs with the Bradley–Terry loss
P(chosen ≻ rejected) = σ(r(x, y_c) − r(x, y_r)), read at the last real token (the EOS when the response has one).

References: Bradley & Terry 1952; Christiano et al. 2017 (https://arxiv.org/abs/1706.03741); Stiennon et al. 2020
(https://arxiv.org/abs/2009.01325); InstructGPT (https://arxiv.org/abs/2203.02155); AlpacaFarm
(https://arxiv.org/abs/2305.14387). Details: docs/methods/reward.md.

Departures: optional margin (Llama 2, https://arxiv.org/abs/2307.09288) and centering term
(Eisenstein et al. 2023, https://arxiv.org/abs/2312.09244), both off by default; optional soft labels
(p = P(chosen better) from a judge with calibrated probabilities); the head starts at zero so the initial loss
is exactly log 2.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from farm.methods.data import read_preferences, tokenize_sft
from farm.methods.loop import TrainConfig, finish_run, fit, maybe_lora, weights_dtype
from farm.methods.scorers import sequence_rewards


@dataclass
class Config:
    """`farm train reward --config configs/train_reward.yaml`. Defaults fit a tiny model on CPU (`farm compare`)."""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style"}

    policy: str
    """initial backbone: usually the SFT policy folder (its LM head is dropped, a zero scalar head added)"""
    data: str
    """preference file: annotations (output_1, output_2, p_output_2 / AlpacaEval preference) or chosen/rejected"""
    output_dir: str
    """where output_dir/model (an HF sequence-classification folder) and metrics.json go"""
    eval_data: str = ""
    """held-out preference file; empty = hold out eval_fraction of `data`"""
    eval_fraction: float = 0.1
    """share of `data` held out for accuracy when eval_data is empty"""
    max_eval: int = 0
    """score at most this many held-out pairs (0 = all)"""
    max_len: int = 160
    """prompt + response tokens per sequence (512 for real models)"""
    prompt_style: str = "alpaca"
    """prompt format: alpaca or chat"""
    margin: float = 0.0
    """required reward gap: loss = -log σ(r_c - r_r - margin)"""
    center_coef: float = 0.0
    """weight of (r_c + r_r)² that keeps rewards centred at 0 (0 = off)"""
    soft_labels: bool = False
    """use p = P(chosen better) as a soft target (keeps ties) instead of dropping ties and using p = 1"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, epochs=3.0, per_device_batch_size=32))
    """optimiser and loop settings: a tiny model learns at lr 1e-3 in 3 epochs of batch 32; AlpacaFarm's 7B RM:
    lr 3e-6, 1 epoch, batch 32"""


def rm_loss(r_chosen, r_rejected, p_chosen, margin: float = 0.0, center_coef: float = 0.0):
    """Bradley–Terry negative log-likelihood SUMMED over pairs. r_chosen, r_rejected, p_chosen: (B,) → ().

    p_chosen = 1 is the usual hard label; p < 1 mixes in the reversed order (soft label)."""
    import torch.nn.functional as F

    d = r_chosen.float() - r_rejected.float() - margin  # (B,)
    nll = -(p_chosen * F.logsigmoid(d) + (1 - p_chosen) * F.logsigmoid(-d))  # (B,)
    center = center_coef * (r_chosen.float() + r_rejected.float()) ** 2  # (B,)
    return (nll + center).sum()


def pair_batch(tokenizer, triples: list[dict], max_len: int, style: str) -> dict[str, Any]:
    """Chosen rows then rejected rows in one right-padded batch: input_ids/attention_mask (2B, T), p_chosen (B,)."""
    import torch

    recs = [{**t, "output": t["chosen"]} for t in triples] + [{**t, "output": t["rejected"]} for t in triples]
    b = tokenize_sft(tokenizer, recs, max_len, style)
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
            "p_chosen": torch.tensor([float(t.get("p_chosen", 1.0)) for t in triples])}


def pair_rewards(model, batch) -> tuple[Any, Any]:
    """(r_chosen (B,), r_rejected (B,)) from one forward over the 2B rows of `pair_batch`."""
    r = sequence_rewards(model, batch["input_ids"], batch["attention_mask"])  # (2B,)
    B = r.shape[0] // 2
    return r[:B], r[B:]


def train_reward_model(model, tokenizer, triples: list[dict], tc: TrainConfig, *, max_len: int = 512,
                       style: str = "alpaca", margin: float = 0.0, center_coef: float = 0.0, out_dir=None,
                       accelerator=None) -> dict[str, Any]:
    """Train a scalar model (`load_scalar_model`) in place on preference triples (`read_preferences`)."""

    def make_batch(ts: list[dict]):
        return pair_batch(tokenizer, ts, max_len, style), float(len(ts))

    def loss_fn(model, b):
        rc, rr = pair_rewards(model, b)
        loss = rm_loss(rc, rr, b["p_chosen"].to(rc.device), margin, center_coef)
        return loss, {"accuracy": (rc > rr).float().mean().item(), "reward_mean": (rc + rr).mean().item() / 2}

    return fit(model, tokenizer, triples, make_batch, loss_fn, tc, out_dir, accelerator, desc="reward")


def evaluate_reward_model(model, tokenizer, triples: list[dict], *, max_len: int = 512, style: str = "alpaca",
                          batch_size: int = 16) -> dict[str, float]:
    """Held-out accuracy (a tie in reward counts ½) with its binomial SE, and the mean BT loss."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, nll = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(triples), batch_size):
                b = pair_batch(tokenizer, triples[s:s + batch_size], max_len, style)
                rc, rr = pair_rewards(model, {k: v.to(device) for k, v in b.items()})
                correct += ((rc > rr).float() + 0.5 * (rc == rr).float()).tolist()
                nll.append(rm_loss(rc, rr, torch.ones_like(rc)).item())
    finally:
        model.train(was_training)
    n = len(correct)
    acc = sum(correct) / max(n, 1)
    return {"accuracy": acc, "accuracy_se": math.sqrt(acc * (1 - acc) / max(n - 1, 1)), "n": n,
            "loss": sum(nll) / max(n, 1)}


def split_heldout(triples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by a seeded shuffle."""
    order = list(range(len(triples)))
    random.Random(seed).shuffle(order)
    k = max(1, int(round(fraction * len(triples)))) if fraction > 0 else 0
    return [triples[i] for i in order[k:]], [triples[i] for i in order[:k]]


def run(cfg: Config) -> dict[str, Any]:
    """Read preferences, train the RM from cfg.policy, report held-out accuracy, save output_dir/model."""
    from farm.models.loading import load_scalar_model

    triples = read_preferences(cfg.data, soft=cfg.soft_labels)
    if cfg.eval_data:
        train, heldout = triples, read_preferences(cfg.eval_data)
    else:
        train, heldout = split_heldout(triples, cfg.eval_fraction, cfg.train.seed)
    if cfg.max_eval:
        heldout = heldout[:cfg.max_eval]
    model, tok = load_scalar_model(cfg.policy, device="cpu", dtype=weights_dtype(cfg.train))
    model = maybe_lora(model, cfg.train)  # LoRA when train.lora_r > 0
    result = train_reward_model(model, tok, train, cfg.train, max_len=cfg.max_len, style=cfg.prompt_style,
                                margin=cfg.margin, center_coef=cfg.center_coef, out_dir=cfg.output_dir)
    extra: dict[str, Any] = {"n_train_pairs": len(train)}
    if heldout and result["finished"]:
        extra["heldout"] = evaluate_reward_model(result["model"], tok, heldout, max_len=cfg.max_len,
                                                 style=cfg.prompt_style, batch_size=cfg.train.per_device_batch_size)
    return finish_run(cfg.output_dir, result, tok, extra)
