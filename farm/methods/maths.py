"""Pure tensor maths shared by every method. Each function is unit-tested against numbers worked out by hand
(tests/test_maths.py). Conventions: B = batch, T = tokens; masks are 0/1 of the same shape; everything that feeds a
loss or a KL is computed in fp32.
"""

from __future__ import annotations

import torch

# the model-side functions live with the models (farm/models may not import farm/methods); re-exported here
from farm.models.logprobs import (  # noqa: F401
    entropy_from_logits,
    logprobs_from_logits,
    position_ids_from_mask,
    response_logprobs,
)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over positions where mask = 1 (all of them, or along `dim`)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    centred = (x - mean) * mask
    n = mask.sum()
    var = (centred**2).sum() / n.clamp(min=1)
    if unbiased:
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked positions; with shift_mean=False the mean is added back (used for rewards)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a (B, T) mask (0 for an all-zero row).

    >>> last_token_index(torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]])).tolist()
    [1, 2, 2]
    """
    T = mask.shape[-1]
    idx = torch.arange(T, device=mask.device).expand_as(mask)
    return (idx * (mask > 0)).amax(-1)


def terminal_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence scores (B,) placed on the last real token of each response. (B,), (B, R) → (B, R) fp32."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    out[torch.arange(mask.shape[0], device=mask.device), last_token_index(mask)] = scores.float()
    return out * mask


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from samples of π, in fp32 (Schulman's k1/k2/k3).

    k1 = log π - log π_ref (unbiased, can be negative); k2 = ½ (log ratio)²; k3 = (r - 1) - log r with
    r = π_ref / π (unbiased, always ≥ 0).
    """
    log_ratio = logprobs.float() - ref_logprobs.float()
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r} (k1, k2 or k3)")


def gae_loop(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
             lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, the textbook backward loop (reference implementation).

    Values and rewards after the last real token are ignored (the episode ended there: V = 0 beyond it).
    Returns (advantages, returns), each (B, T), zero on masked positions.
    """
    rewards, values, mask = rewards.float(), values.float() * mask, mask.float()
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B, device=rewards.device)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0.0)) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE without a Python loop: A = Δ · W with W[s, t] = (γλ)^(t-s) for s ≥ t... (upper-triangular
    discount matrix). Same numbers as `gae_loop` for masks that are a prefix of ones (responses)."""
    rewards, mask = rewards.float(), mask.float()
    values = values.float() * mask
    T = rewards.shape[1]
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    delta = (rewards + gamma * next_values - values) * mask  # (B, T)
    idx = torch.arange(T, device=rewards.device)
    power = (idx[None, :] - idx[:, None]).float()  # (T, T): s - t for row t, column s
    W = torch.where(power >= 0, (gamma * lam) ** power.clamp(min=0), torch.zeros((), device=rewards.device))
    adv = (delta @ W.T) * mask  # A_t = Σ_s≥t (γλ)^(s-t) δ_s
    return adv, (adv + values) * mask


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate, mean over real tokens. Returns (loss, stats with clip fraction and ratio)."""
    ratio = torch.exp(logprobs.float() - old_logprobs.float())  # (B, T)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((pg2 > pg1).float(), mask).item(),
                 "ratio_mean": masked_mean(ratio, mask).item(),
                 "approx_kl": masked_mean(0.5 * (logprobs.float() - old_logprobs.float()) ** 2, mask).item()}
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 0.2) -> torch.Tensor:
    """½ max((V - R)², (clip(V, V_old ± ε) - R)²), mean over real tokens."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
