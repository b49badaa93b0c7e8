"""Supervised fine-tuning (SFT): maximise the log-likelihood of reference responses given their prompts.

The first stage of AlpacaFarm (Dubois et al. 2023, https://arxiv.org/abs/2305.14387) and InstructGPT
(Ouyang et al. 2022, https://arxiv.org/abs/2203.02155). Details: docs/methods/sft.md.

The loss (`loop.sft_loss`) and the training (`loop.train_sft`) are on the floor, because expert iteration,
rewriting and correction fine-tune on demonstrations too; this file is SFT's config and run.

Departures: the loss is summed over response tokens and divided by the number of response tokens in the whole
optimizer step (see farm/methods/loop.py), not averaged per micro-batch; no packing (each example is its own
row, padding masked), so attention never crosses examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from farm.methods.data import read_instructions
from farm.methods.loop import TrainConfig, finish_run, maybe_lora, train_sft, weights_dtype


@dataclass
class Config:
    """`farm train sft --config configs/train_sft.yaml`. Defaults fit a tiny model on CPU (`farm compare`)."""

    RENAMED: ClassVar[dict[str, str]] = {"style": "prompt_style"}

    policy: str
    """initial causal LM: a folder written by save_pretrained (e.g. a tiny model) or a cached hub name"""
    data: str
    """JSON/JSONL records with instruction, input (optional) and output"""
    output_dir: str
    """where the model (output_dir/model), checkpoint and metrics.json go"""
    max_len: int = 160
    """prompt + response tokens per example (longer ones are cut: prompt start, response end); 512 for real models"""
    prompt_style: str = "alpaca"
    """prompt format: alpaca or chat (the tokenizer's chat template)"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-3, epochs=4.0, per_device_batch_size=32))
    """optimiser and loop settings: a tiny model from scratch learns at lr 3e-3 in 4 epochs of batch 32; AlpacaFarm's
    7B SFT: lr 2e-5, 3 epochs, batch 128, warmup 3%"""


def run(cfg: Config) -> dict[str, Any]:
    """Read cfg.data, fine-tune cfg.policy, save output_dir/model and output_dir/metrics.json."""
    from farm.models.loading import load_causal_lm

    records = read_instructions(cfg.data, need_output=True)
    model, tok = load_causal_lm(cfg.policy, device="cpu", dtype=weights_dtype(cfg.train))
    model = maybe_lora(model, cfg.train)  # LoRA when train.lora_r > 0
    result = train_sft(model, tok, records, cfg.train, max_len=cfg.max_len, style=cfg.prompt_style,
                       out_dir=cfg.output_dir)
    return finish_run(cfg.output_dir, result, tok, {"n_examples": len(records)})
