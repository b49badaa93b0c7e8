"""A lean sampling loop for Llama-family decoders (Llama, SmolLM2, Qwen2, Mistral), the same tokens as
`model.generate` with fewer Python-level operations per token.

`transformers`' generate spends most of a small model's decode step outside the matrix products: building a 4-D
mask, growing a DynamicCache by concatenation, logits processors and stopping criteria, output dataclasses.
Here the prompt goes through the model's own forward once (prefill; a prompt repeated in the batch, as
the k samples of RLOO or GRPO, once for all its rows); each new token then runs the model's own
modules (norms, projections, MLP, rotary embedding; LoRA adapters included, since they live inside those
modules) with a STATIC key/value buffer written in place, a padding bias built once, and plain temperature
sampling with the same calls, in the same order, on the same random stream as `generate` (`softmax` then
`torch.multinomial`), so a seeded run draws the same tokens (tests/test_models.py compares them, with repeated
prompts; a smaller prefill batch can round differently, so on another BLAS a rare draw could differ).

Used by `farm.models.generation.generate` when `supports(model, ...)` says the model and the decoding options
are ones it reproduces exactly; anything else (top-k/top-p, a repetition penalty in the model's generation
config, another architecture, sliding windows) goes through `model.generate`.
"""

from __future__ import annotations

from typing import Any

_ARCHS = ("llama", "qwen2", "mistral")
# generation-config fields that would add a logits processor generate applies and this loop does not
_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0,
               "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
               "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "typical_p": 1.0, "min_p": None,
               "exponential_decay_length_penalty": None, "renormalize_logits": False}


def base_causal_lm(model):
    """The transformers model inside a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def supports(model, *, top_k: int = 0, top_p: float = 1.0, max_length: int = 0) -> bool:
    """True when the lean loop draws exactly what `model.generate` would for these options."""
    lm = base_causal_lm(model)
    config = getattr(lm, "config", None)
    if config is None or getattr(config, "model_type", None) not in _ARCHS or top_k or top_p < 1.0:
        return False
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", window is not None) and window and window < max_length:
        return False
    gen = getattr(lm, "generation_config", None)
    for name, neutral in _PROCESSORS.items():
        value = getattr(gen, name, neutral) if gen is not None else neutral
        if value not in (neutral, None) and not (name == "min_length" and value == 0):
            return False
    body = getattr(lm, "model", None)
    return all(hasattr(body, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))


def sample(model, input_ids, attention_mask, *, max_new_tokens: int, eos_token_id: int, pad_token_id: int,
           temperature: float = 1.0, greedy: bool = False):
    """Response tokens (B, R ≤ max_new_tokens) for left-padded prompts, pad after each row's EOS; stops when every
    row has produced EOS. Call under torch.no_grad() with the model in eval mode."""
    import torch
    import torch.nn.functional as F

    lm = base_causal_lm(model)
    body, config = lm.model, lm.config
    B, P = input_ids.shape
    device = input_ids.device
    position = attention_mask.long().cumsum(-1) - 1
    position = position.masked_fill(attention_mask == 0, 0)
    # identical prompts (the k samples of a prompt in RLOO, GRPO, best-of-n) are prefilled once; every row that
    # repeats one gets a copy of its keys, values and last logits
    rows, inverse = torch.unique(torch.cat([input_ids, attention_mask.to(input_ids.dtype)], 1), dim=0,
                                 return_inverse=True)
    repeated = len(rows) < B
    if repeated:
        mask = rows[:, P:].to(attention_mask.dtype)
        out = model(input_ids=rows[:, :P], attention_mask=mask, position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1)
    else:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position, use_cache=True,
                    logits_to_keep=1)
    from farm.models.kvcache import cache_layers

    prefill = cache_layers(out)
    T = P + max_new_tokens
    kv_heads, head_dim = prefill[0][0].shape[1], prefill[0][0].shape[3]
    dtype = prefill[0][0].dtype
    keys = [torch.empty((B, kv_heads, T, head_dim), dtype=dtype, device=device) for _ in prefill]
    values = [torch.empty_like(k) for k in keys]
    for (k, v), kb, vb in zip(prefill, keys, values):
        kb[:, :, :P] = k[inverse] if repeated else k
        vb[:, :, :P] = v[inverse] if repeated else v
    del prefill
    bias = torch.zeros((B, 1, 1, T), dtype=dtype, device=device)  # additive: 0 visible, -inf padding
    bias[:, 0, 0, :P].masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
    groups = config.num_attention_heads // config.num_key_value_heads
    gqa = _sdpa_gqa()
    logits = out.logits[:, -1].to(dtype=torch.float32)
    if repeated:
        logits = logits[inverse]
    unfinished = torch.ones(B, dtype=torch.bool, device=device)
    position = position[:, -1:]
    tokens = []
    layers = body.layers[: config.num_hidden_layers]
    for t in range(max_new_tokens):
        if greedy:
            nxt = logits.argmax(-1)
        else:
            scores = logits / temperature if temperature != 1.0 else logits
            nxt = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_token_id))
        tokens.append(nxt)
        unfinished &= nxt != eos_token_id
        if t == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        position = position + 1
        at = P + t  # the buffer slot of this token
        h = body.embed_tokens(nxt[:, None])
        cos, sin = body.rotary_emb(h, position)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = bias[..., : at + 1]
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            a = layer.input_layernorm(h)
            q = attn.q_proj(a).view(B, 1, -1, head_dim).transpose(1, 2)
            k = attn.k_proj(a).view(B, 1, -1, head_dim).transpose(1, 2)
            keys[i][:, :, at] = (k * cos + _rotate_half(k) * sin)[:, :, 0]
            values[i][:, :, at] = attn.v_proj(a).view(B, -1, head_dim)
            q = q * cos + _rotate_half(q) * sin
            kk, vv = keys[i][:, :, : at + 1], values[i][:, :, : at + 1]
            if groups > 1 and not gqa:
                kk, vv = kk.repeat_interleave(groups, dim=1), vv.repeat_interleave(groups, dim=1)
            extra: dict[str, Any] = {"enable_gqa": True} if groups > 1 and gqa else {}
            o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=attn.scaling, **extra)
            h = h + attn.o_proj(o.transpose(1, 2).reshape(B, 1, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        logits = lm.lm_head(body.norm(h)[:, -1]).to(dtype=torch.float32)
    return torch.stack(tokens, dim=1)


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _sdpa_gqa() -> bool:
    import inspect

    import torch.nn.functional as F

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature: try it
        return _try_gqa()


def _try_gqa() -> bool:
    import torch
    import torch.nn.functional as F

    q, k = torch.zeros(1, 2, 1, 2), torch.zeros(1, 1, 1, 2)
    try:
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
        return True
    except TypeError:
        return False
