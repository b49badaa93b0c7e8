"""Supervised fine-tuning (SFT): maximise the log-likelihood of reference responses given their prompts.

The first stage of AlpacaFarm (Dubois et al. 2023, https://arxiv.org/abs/2305.14387) and InstructGPT
(Ouyang et al. 2022, https://arxiv.org/abs/2203.02155). Details: docs/methods/sft.md.

Departures: the loss is summed over response tokens and divided by the number of response tokens in the whole
optimizer step (see farm/methods/common.py), not averaged per micro-batch; no packing (each example is its own
row, padding masked), so attention never crosses examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.methods.common import (
    IGNORE_INDEX,
    TrainConfig,
    finish_run,
    fit,
    maybe_lora,
    read_instructions,
    tokenize_sft,
    weights_dtype,
)


@dataclass
class Config:
    """`farm train sft --config configs/train_sft.yaml`"""

    policy: str
    """initial causal LM: a folder written by save_pretrained (e.g. a tiny model) or a cached hub name"""
    data: str
    """JSON/JSONL records with instruction, input (optional) and output"""
    output_dir: str
    """where the model (output_dir/model), checkpoint and metrics.json go"""
    max_len: int = 512
    """prompt + response tokens per example (longer ones are cut: prompt start, response end)"""
    style: str = "alpaca"
    """prompt format: alpaca or chat (the tokenizer's chat template)"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=2e-5, epochs=3.0))
    """optimiser and loop settings (AlpacaFarm SFT: lr 2e-5, 3 epochs, batch 128, warmup 3%)"""


def sft_loss(logits, labels):
    """Summed next-token cross-entropy on labelled (response) tokens, and how many there are.

    logits (B, T, V), labels (B, T) with IGNORE_INDEX on prompt/padding → (loss sum (), n tokens ())."""
    import torch.nn.functional as F

    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    targets = labels[:, 1:]  # (B, T-1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return loss, (targets != IGNORE_INDEX).sum()


def train_sft(model, tokenizer, records: list[dict], tc: TrainConfig, *, max_len: int = 512, style: str = "alpaca",
              out_dir: str | Path | None = None, accelerator=None) -> dict[str, Any]:
    """SFT `model` in place on records with instruction/input/output. Returns `fit`'s dict (steps, loss,
    history, model)."""

    def make_batch(recs: list[dict]):
        b = tokenize_sft(tokenizer, recs, max_len, style)
        return b, float((b["labels"][:, 1:] != IGNORE_INDEX).sum())

    def loss_fn(model, b):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss, _ = sft_loss(logits, b["labels"])
        return loss, {}

    return fit(model, tokenizer, records, make_batch, loss_fn, tc, out_dir, accelerator, desc="sft")


def run(cfg: Config) -> dict[str, Any]:
    """Read cfg.data, fine-tune cfg.policy, save output_dir/model and output_dir/metrics.json."""
    from farm.models.loading import load_causal_lm

    records = read_instructions(cfg.data, need_output=True)
    model, tok = load_causal_lm(cfg.policy, device="cpu", dtype=weights_dtype(cfg.train))
    model = maybe_lora(model, cfg.train)  # LoRA when train.lora_r > 0
    result = train_sft(model, tok, records, cfg.train, max_len=cfg.max_len, style=cfg.style, out_dir=cfg.output_dir)
    return finish_run(cfg.output_dir, result, tok, {"n_examples": len(records)})
