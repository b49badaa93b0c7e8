"""Tiny local models built from a config: a byte-level BPE tokenizer trained on the run's own text and a small
`transformers` Llama, saved with `save_pretrained` so every other part of farm loads it exactly like a 7B model.

pad ≠ eos: the tokenizer has distinct <pad>, <eos>, <bos>, <unk> tokens (ids 0..3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"


@dataclass
class TinySpec:
    """Shape of a tiny Llama. Defaults: ~0.5M parameters, ~7 SFT steps/s on 2 CPU cores."""

    n_layers: int = 2
    """transformer blocks"""
    hidden: int = 96
    """model width"""
    heads: int = 4
    """attention heads (hidden must divide by it)"""
    intermediate: int = 256
    """MLP width"""
    vocab_size: int = 768
    """BPE vocabulary size (including 256 byte tokens and 4 special tokens)"""
    max_positions: int = 256
    """longest prompt + response in tokens"""
    tie_embeddings: bool = True
    """share input and output embeddings (halves the embedding parameters)"""


def train_tokenizer(texts: Iterable[str], vocab_size: int = 768):
    """Byte-level BPE trained on `texts` (any string encodes: no <unk> at run time), wrapped as a
    `PreTrainedTokenizerFast` with distinct pad/eos/bos tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS, BOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=BOS, unk_token=UNK,
        padding_side="right", clean_up_tokenization_spaces=False,
    )
    assert fast.pad_token_id != fast.eos_token_id
    return fast


def build_tiny_lm(tokenizer, spec: TinySpec | None = None, seed: int = 0):
    """A randomly initialised `LlamaForCausalLM` sized by `spec`, wired to the tokenizer's special tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or TinySpec()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.n_layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions, tie_word_embeddings=spec.tie_embeddings,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def build_tiny(texts: Iterable[str], out_dir: str | Path, spec: TinySpec | None = None, seed: int = 0) -> Path:
    """Train a tokenizer on `texts`, build a tiny LM, and save both to `out_dir` (a normal HF model folder)."""
    spec = spec or TinySpec()
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    model = build_tiny_lm(tokenizer, spec, seed)
    out_dir = Path(out_dir)
    from farm.models.loading import save_model

    save_model(model, tokenizer, out_dir)
    return out_dir
