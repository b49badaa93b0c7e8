"""Log-probabilities of tokens under a causal LM: the model-side maths that generation backends and every method
share (farm/methods/maths.py re-exports these names). Conventions: B = batch, T = tokens, V = vocabulary;
computed in fp32. Tested by hand in tests/test_maths.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[labels] in fp32. (B, T, V), (B, T) → (B, T)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position, fp32. (B, T, V) → (B, T)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: [0,0,1,1,1] → [0,0,0,1,2]."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                      response_mask: torch.Tensor, temperature: float = 1.0, return_entropy: bool = False):
    """Log-probs (B, R) of each response token under `model`, for left-padded prompts (B, P) followed by
    right-padded responses (B, R). Positions after EOS are computed but should be masked by the caller."""
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    P = prompt_ids.shape[1]
    logits = out.logits[:, P - 1:-1]  # logits at t predict token t+1 → the R response tokens
    lp = logprobs_from_logits(logits, response_ids, temperature)
    if return_entropy:
        return lp, entropy_from_logits(logits, temperature)
    return lp
