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


def continuation_logits(model, prompt_ids, prompt_mask, continuations, detached: int = 0):
    """Logits (J·B, R, V) predicting every token of each continuation (row j·B + i: continuation j of prompt i;
    R = the longest continuation), with the prompts run once. `continuations` is a list of (ids, mask) pairs,
    one per continuation, each with the prompts' batch size B. Differentiable; in the model's dtype.

    The last `detached` continuations are scored WITHOUT gradient: their rows are constants and cost one forward
    of their own tokens only (KTO's mismatched answers, whose log-ratios set its reference point), where scoring
    them as separate rows under `torch.no_grad` would run their prompts through the model again.

    Llama-family models (`fast_decode`'s) run their body twice and their embedding and LM head ONCE, on the
    prompts' and continuations' tokens together: a tied 49k × 576 embedding then gets one gradient, not four
    (two lookups, two heads) summed; other models go through their own forward twice."""
    import torch

    parts = _logits_parts(model, prompt_ids, prompt_mask, continuations, detached)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _logits_parts(model, prompt_ids, prompt_mask, continuations, detached: int) -> list:
    """`continuation_logits` as [logits with gradient (G·B, R, V), constant logits (detached·B, R, V)], either
    left out when it has no rows."""
    import torch

    from farm.models.fast_decode import base_causal_lm
    from farm.models.kvcache import cache_layers, expanded_rows_cache, forward_cache_kwarg

    lm = base_causal_lm(model)
    J = len(continuations)
    if not 0 <= detached <= J:
        raise ValueError(f"detached must be between 0 and {J}, got {detached}")
    G = J - detached  # continuations with gradient
    B, P = prompt_ids.shape
    position = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    R = max(ids.shape[1] for ids, _ in continuations)
    ids = torch.cat([torch.nn.functional.pad(i, (0, R - i.shape[1])) for i, _ in continuations])  # (J·B, R)
    mask = torch.cat([torch.nn.functional.pad(m, (0, R - m.shape[1])) for _, m in continuations])
    cont_pos = position[:, -1:].repeat(J, 1) + 1 + torch.arange(R, device=ids.device)
    cont_mask = torch.cat([prompt_mask.repeat(J, 1), mask], dim=1)
    grad, const = slice(0, G * B), slice(G * B, J * B)  # the rows with and without gradient
    body_and_head = _body_and_head(lm)
    kwarg = forward_cache_kwarg(lm.model if body_and_head else lm)
    if body_and_head:
        body = lm.model
        emb = body.embed_tokens(torch.cat([prompt_ids.reshape(-1), ids[grad].reshape(-1)]))  # one lookup

        def run(rows, emb_rows, layers, n):  # the continuations' last hidden states through the body
            return body(inputs_embeds=emb_rows.view(n * B, R, -1), attention_mask=cont_mask[rows],
                        position_ids=cont_pos[rows], use_cache=True,
                        **{kwarg: expanded_rows_cache(layers, n)}).last_hidden_state

        out = body(inputs_embeds=emb[: B * P].view(B, P, -1), attention_mask=prompt_mask, position_ids=position,
                   use_cache=True)
        last = out.last_hidden_state[:, -1:]  # the prompt's last state predicts every continuation's first token
        parts = []
        if G:
            h = torch.cat([last.repeat(G, 1, 1), run(grad, emb[B * P:], cache_layers(out), G)[:, :-1]], dim=1)
            parts.append(lm.lm_head(h))  # (G·B, R, V)
        if detached:
            with torch.no_grad():  # inside, every result is a constant, the prompt's cache included
                rest = run(const, body.embed_tokens(ids[const]), cache_layers(out), detached)
                parts.append(lm.lm_head(torch.cat([last.repeat(detached, 1, 1), rest[:, :-1]], dim=1)))
        return parts
    # through the model's own forward (peft adapters apply); the cache keyword of the transformers model inside
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position, use_cache=True,
                logits_to_keep=1)
    first = out.logits[:, -1:]  # (B, 1, V): the logits of every continuation's first token

    def run_model(rows, layers, n):
        rest = model(input_ids=ids[rows], attention_mask=cont_mask[rows], position_ids=cont_pos[rows], use_cache=True,
                     **{kwarg: expanded_rows_cache(layers, n)}).logits
        return torch.cat([first.repeat(n, 1, 1), rest[:, :-1]], dim=1)

    parts = [run_model(grad, cache_layers(out), G)] if G else []
    if detached:
        with torch.no_grad():  # inside, every result is a constant, the prompt's cache and first logits included
            parts.append(run_model(const, cache_layers(out), detached))
    return parts


def _body_and_head(lm) -> bool:
    """A Llama-family causal LM whose logits are exactly lm_head(model(...)) (no logit scaling or soft-capping)."""
    import torch

    from farm.models.fast_decode import _ARCHS

    body = getattr(lm, "model", None)
    return (getattr(getattr(lm, "config", None), "model_type", None) in _ARCHS
            and isinstance(getattr(lm, "lm_head", None), torch.nn.Linear)
            and all(hasattr(body, a) for a in ("embed_tokens", "layers", "norm")))


def continuation_logprobs(model, prompt_ids, prompt_mask, continuations, temperature: float = 1.0,
                          detached: int = 0):
    """[(B, R_j) fp32 log-probs of each continuation's tokens] with the prompts run once. `continuations` is a
    list of (ids, mask) pairs, one per continuation, each with the prompts' batch size B. Differentiable, but
    for the last `detached` continuations (`continuation_logits`)."""
    import torch

    B = prompt_ids.shape[0]
    parts = _logits_parts(model, prompt_ids, prompt_mask, continuations, detached)
    R = parts[0].shape[1]
    ids = torch.cat([torch.nn.functional.pad(i, (0, R - i.shape[1])) for i, _ in continuations])  # (J·B, R)
    out = []
    for block in parts:  # each block on its own: no backward through the constant rows' log-softmax
        logits = block.float() / temperature if temperature != 1.0 else block.float()
        j0 = len(out)
        lp = torch.gather(logits.log_softmax(-1), 2, ids[j0 * B:j0 * B + len(logits), :, None]).squeeze(-1)
        out += [lp[j * B:(j + 1) * B, : continuations[j0 + j][0].shape[1]] for j in range(len(logits) // B)]
    return out
