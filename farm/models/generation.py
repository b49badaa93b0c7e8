"""Prompt formatting and batched generation shared by every method.

Rules (each one a bug seen in other projects):
- prompts are LEFT-padded for generation; position ids follow the attention mask, so a padded prompt gives the
  same log-probs as an unpadded one;
- the response mask is 1 up to and including the first EOS (EOS is an action) and 0 after it; a response that hit
  `max_new_tokens` without EOS is truncated (mask all ones, `truncated` True);
- sampling is plain temperature sampling by default (top_k=0, top_p=1) so log-probs recomputed from the
  training forward with the same temperature are exactly the sampler's.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


def format_prompt(instruction: str, input: str = "", tokenizer=None, style: str = "alpaca") -> str:
    """The text a policy sees. `alpaca` (default; tiny models) or `chat` (the tokenizer's chat template).

    >>> format_prompt("Sort: 3 1 2")
    '### Instruction:\\nSort: 3 1 2\\n\\n### Response:\\n'
    """
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("style='chat' needs a tokenizer with a chat template")
        content = instruction if not input else f"{instruction}\n\n{input}"
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    if style != "alpaca":
        raise ValueError(f"unknown prompt style {style!r} (alpaca or chat)")
    if input:
        return ALPACA_TEMPLATE.format(instruction=instruction, input=input)
    return ALPACA_TEMPLATE_NO_INPUT.format(instruction=instruction)


@dataclass
class Generation:
    """Token-level result of `generate`. Shapes: B prompts, P prompt tokens (left-padded), R response tokens."""

    prompt_ids: object  # (B, P) long, left-padded with pad_token_id
    prompt_mask: object  # (B, P)
    response_ids: object  # (B, R) long, right-padded with pad_token_id
    response_mask: object  # (B, R) 1 up to and including EOS
    texts: list[str]  # decoded responses (special tokens removed)
    truncated: list[bool]  # no EOS within max_new_tokens


def tokenize_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int | None = None):
    """Left-padded (ids, mask). Over-long prompts keep their END (the part next to the response)."""
    import torch

    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_tokens:
        enc = [e[-max_prompt_tokens:] for e in enc]
    P = max(len(e) for e in enc)
    ids = torch.full((len(enc), P), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), P), dtype=torch.long)
    for i, e in enumerate(enc):
        if e:
            ids[i, P - len(e):] = torch.tensor(e)
            mask[i, P - len(e):] = 1
    return ids, mask


def response_mask_from_ids(response_ids, eos_id: int):
    """1 up to and including the first EOS, 0 after. (B, R) → (B, R).

    >>> import torch
    >>> response_mask_from_ids(torch.tensor([[5, 1, 0, 0], [5, 6, 7, 8]]), eos_id=1).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 1]]
    """
    import torch

    is_eos = (response_ids == eos_id).long()
    eos_seen_before = torch.cumsum(is_eos, dim=1) - is_eos  # EOS strictly before this position
    return (eos_seen_before == 0).long()


def _pad_right(t, length: int, value: int):
    import torch.nn.functional as F

    return F.pad(t, (0, length - t.shape[1]), value=value)


def _pad_left(t, length: int, value: int):
    import torch.nn.functional as F

    return F.pad(t, (length - t.shape[1], 0), value=value)


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 32, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, greedy: bool = False, batch_size: int = 16,
             seed: int | None = None, max_prompt_tokens: int | None = None, progress: bool = False,
             engine: str = "auto") -> Generation:
    """Sample one response per prompt (repeat prompts for n samples). Uses the model's KV cache.

    `engine`: "auto" = the lean loop of farm/models/fast_decode.py where it draws exactly what `model.generate`
    would (Llama-family models, plain temperature sampling or greedy), else `model.generate`; "hf" forces
    `model.generate`."""
    import torch
    from tqdm.auto import tqdm

    from farm.models import fast_decode

    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False):
            batch = prompts[start:start + batch_size]
            ids, mask = tokenize_prompts(tokenizer, batch, max_prompt_tokens)
            if seed is not None:  # one seed per batch drawn from the run's generator: reproducible, not repeated
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            lean = engine == "auto" and fast_decode.supports(model, top_k=0 if greedy else top_k,
                                                             top_p=1.0 if greedy else top_p,
                                                             max_length=ids.shape[1] + max_new_tokens)
            with torch.no_grad():
                if lean:
                    resp = fast_decode.sample(model, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens,
                                              eos_token_id=tokenizer.eos_token_id,
                                              pad_token_id=tokenizer.pad_token_id, temperature=temperature,
                                              greedy=greedy).cpu()
                else:
                    kwargs = dict(do_sample=not greedy, max_new_tokens=max_new_tokens,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                    if not greedy:
                        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
                    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
                    resp = out[:, ids.shape[1]:].cpu()
            if resp.shape[1] == 0:
                resp = torch.full((len(batch), 1), tokenizer.eos_token_id, dtype=torch.long)
            chunks.append((ids, mask, resp))
    finally:
        model.train(was_training)
    P = max(c[0].shape[1] for c in chunks)
    R = max(c[2].shape[1] for c in chunks)
    prompt_ids = torch.cat([_pad_left(c[0], P, tokenizer.pad_token_id) for c in chunks])
    prompt_mask = torch.cat([_pad_left(c[1], P, 0) for c in chunks])
    response_ids = torch.cat([_pad_right(c[2], R, tokenizer.pad_token_id) for c in chunks])
    response_mask = response_mask_from_ids(response_ids, tokenizer.eos_token_id)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    truncated = [(response_ids[i, : int(response_mask[i].sum())] != tokenizer.eos_token_id).all().item()
                 for i in range(len(prompts))]
    texts = decode_responses(tokenizer, response_ids, response_mask)
    return Generation(prompt_ids, prompt_mask, response_ids, response_mask, texts, truncated)


def decode_responses(tokenizer, response_ids, response_mask) -> list[str]:
    out = []
    for row, m in zip(response_ids.tolist(), response_mask.tolist()):
        toks = [t for t, k in zip(row, m) if k and t not in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
        out.append(tokenizer.decode(toks, skip_special_tokens=True).strip())
    return out


def generate_texts(model, tokenizer, instructions: list[dict], *, style: str = "alpaca", **kwargs) -> list[str]:
    """Convenience: records with instruction/input → response strings."""
    prompts = [format_prompt(r["instruction"], r.get("input", ""), tokenizer, style) for r in instructions]
    return generate(model, tokenizer, prompts, **kwargs).texts
