"""Several continuations of the same prompts with the prompts run ONCE (training-time prefix sharing).

DPO scores a chosen and a rejected answer to each prompt; RLOO and GRPO score k samples of each prompt. Run as
separate rows, every prompt token goes through the network (forward and backward) once per continuation. Here the
prompts go through once; their keys and values — with their gradient — are reused by every continuation, so a
DPO step with prompts longer than its answers costs close to half. Values and gradients equal those of running
each [prompt; continuation] row whole, to float rounding (tests/test_models.py).

Layout (as everywhere in farm): prompts left-padded (B, P) with a mask; each continuation right-padded (B, R_j)
with its mask (1 up to and including EOS).

Two forwards make one backward here (prompt, then continuations), so under DistributedDataParallel this needs
`static_graph=True` (or one process); a single process and peft-wrapped models work as they are.
"""

from __future__ import annotations


def continuation_logits(model, prompt_ids, prompt_mask, continuations):
    """Logits (J·B, R, V) predicting every token of each continuation (row j·B + i: continuation j of prompt i;
    R = the longest continuation), with the prompts run once. `continuations` is a list of (ids, mask) pairs,
    one per continuation, each with the prompts' batch size B. Differentiable; in the model's dtype.

    Llama-family models (`fast_decode`'s) run their body twice and their embedding and LM head ONCE, on the
    prompts' and continuations' tokens together: a tied 49k × 576 embedding then gets one gradient, not four
    (two lookups, two heads) summed; other models go through their own forward twice."""
    import torch

    from farm.models.fast_decode import base_causal_lm
    from farm.models.kvcache import cache_layers, expanded_rows_cache, forward_cache_kwarg

    lm = base_causal_lm(model)
    J = len(continuations)
    position = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    R = max(ids.shape[1] for ids, _ in continuations)
    ids = torch.cat([torch.nn.functional.pad(i, (0, R - i.shape[1])) for i, _ in continuations])  # (J·B, R)
    mask = torch.cat([torch.nn.functional.pad(m, (0, R - m.shape[1])) for _, m in continuations])
    cont_pos = position[:, -1:].repeat(J, 1) + 1 + torch.arange(R, device=ids.device)
    cont_mask = torch.cat([prompt_mask.repeat(J, 1), mask], dim=1)
    if _body_and_head(lm):
        body = lm.model
        kwarg = forward_cache_kwarg(body)
        B, P = prompt_ids.shape
        emb = body.embed_tokens(torch.cat([prompt_ids.reshape(-1), ids.reshape(-1)]))  # one lookup (B·P + J·B·R, H)
        out = body(inputs_embeds=emb[: B * P].view(B, P, -1), attention_mask=prompt_mask, position_ids=position,
                   use_cache=True)
        rest = body(inputs_embeds=emb[B * P:].view(J * B, R, -1), attention_mask=cont_mask, position_ids=cont_pos,
                    use_cache=True, **{kwarg: expanded_rows_cache(cache_layers(out), J)}).last_hidden_state
        # the prompt's last state predicts every continuation's first token; the last continuation state nothing
        h = torch.cat([out.last_hidden_state[:, -1:].repeat(J, 1, 1), rest[:, :-1]], dim=1)  # (J·B, R, H)
        return lm.lm_head(h)
    # through the model's own forward (peft adapters apply); the cache keyword of the transformers model inside
    kwarg = forward_cache_kwarg(lm)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position, use_cache=True,
                logits_to_keep=1)
    first = out.logits[:, -1]  # (B, V): the logits of every continuation's first token
    rest = model(input_ids=ids, attention_mask=cont_mask, position_ids=cont_pos, use_cache=True,
                 **{kwarg: expanded_rows_cache(cache_layers(out), J)}).logits
    return torch.cat([first.repeat(J, 1)[:, None], rest[:, :-1]], dim=1)  # (J·B, R, V)


def _body_and_head(lm) -> bool:
    """A Llama-family causal LM whose logits are exactly lm_head(model(...)) (no logit scaling or soft-capping)."""
    import torch

    from farm.models.fast_decode import _ARCHS

    body = getattr(lm, "model", None)
    return (getattr(getattr(lm, "config", None), "model_type", None) in _ARCHS
            and isinstance(getattr(lm, "lm_head", None), torch.nn.Linear)
            and all(hasattr(body, a) for a in ("embed_tokens", "layers", "norm")))


def continuation_logprobs(model, prompt_ids, prompt_mask, continuations, temperature: float = 1.0):
    """[(B, R_j) fp32 log-probs of each continuation's tokens] with the prompts run once. `continuations` is a
    list of (ids, mask) pairs, one per continuation, each with the prompts' batch size B. Differentiable."""
    import torch

    B, J = prompt_ids.shape[0], len(continuations)
    logits = continuation_logits(model, prompt_ids, prompt_mask, continuations).float()  # (J·B, R, V)
    if temperature != 1.0:
        logits = logits / temperature
    R = logits.shape[1]
    ids = torch.cat([torch.nn.functional.pad(i, (0, R - i.shape[1])) for i, _ in continuations])  # (J·B, R)
    lp = torch.gather(logits.log_softmax(-1), 2, ids[..., None]).squeeze(-1)
    return [lp[j * B:(j + 1) * B, : continuations[j][0].shape[1]] for j in range(J)]
