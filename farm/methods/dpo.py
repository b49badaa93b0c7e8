"""Direct Preference Optimisation (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) and two variants:
IPO (Azar et al. 2023, https://arxiv.org/abs/2310.12036) and a length-normalised, reference-free loss in the
style of SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734). Implementation details: docs/methods/dpo.md.

Departures from the papers / other implementations (each on purpose):
- a variant is a separate small loss function in `LOSSES` (name → `PairLoss`), never an `elif` in the loop;
- reference log-probs are computed once, up front, in eval mode without gradients, and the reference model is
  then dropped (the same numbers TRL gets with `precompute_ref_log_probs=True`);
- chosen and rejected responses go through ONE forward pass (2B rows), left-padded prompt + right-padded
  response with position ids from the mask, and the response ends with EOS (EOS is an action);
- the loss of an optimiser step is Σ(per-pair loss) / (pairs in the step), so splitting the step into
  micro-batches (gradient accumulation) gives the same gradient (tests/test_methods_zoo2.py checks 1×8 = 8×1);
  the loop itself is the shared `common.fit` (accelerate, checkpoint + resume, NaN guard);
- β is NOT portable between summed (DPO, IPO) and length-normalised (SimPO-style) log-probs: averaged
  log-ratios are ~|y| times smaller, so the length-normalised loss wants a β roughly |y| times larger
  (SimPO uses β = 2–2.5 where DPO uses 0.1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from farm.methods.common import TrainConfig, finish_run, fit, prompt_text, read_preferences
from farm.methods.ppo import disable_dropout, response_logprobs_tail

# ----- the losses (one small function each; per-pair losses, shape (B,)) -----


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float, margin: float = 0.0) -> torch.Tensor:
    """Sigmoid DPO: -log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)] - margin). All (B,) → (B,)."""
    # Implicit reward difference h (B,): how much more the policy moved towards chosen than rejected
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    # Policy loss (B,)
    return -F.logsigmoid(beta * h - margin)


def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float, margin: float = 0.0) -> torch.Tensor:
    """IPO: (h - 1/(2β))², h the log-ratio difference (the paper's τ is our β). `margin` is unused: the target
    1/(2β) already plays that role. All (B,) → (B,)."""
    # Log-ratio difference h (B,)
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    # Squared regression of h onto 1/(2β) (B,)
    return (h - 1.0 / (2.0 * beta)) ** 2


def length_normalised_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                           ref_rejected: torch.Tensor, beta: float, margin: float = 0.0) -> torch.Tensor:
    """SimPO-style: -log σ(β(avg log π_c - avg log π_r) - γ) on AVERAGE per-token log-probs, reference-free
    (the reference terms are accepted for a uniform signature and ignored). γ = `margin`. (B,) → (B,)."""
    # Length-normalised reward difference (B,)
    h = chosen - rejected
    # Policy loss with target margin γ (B,)
    return -F.logsigmoid(beta * h - margin)


@dataclass(frozen=True)
class PairLoss:
    """A pairwise loss and how it wants its log-probs."""

    fn: Callable[..., torch.Tensor]
    """(chosen, rejected, ref_chosen, ref_rejected, beta, margin) → per-pair loss (B,)"""
    length_normalised: bool = False
    """feed average (not summed) per-token log-probs"""
    uses_reference: bool = True
    """needs reference log-probs (False: no reference model is loaded)"""


LOSSES: dict[str, PairLoss] = {
    "sigmoid": PairLoss(dpo_loss),
    "ipo": PairLoss(ipo_loss),
    "length_normalised": PairLoss(length_normalised_loss, length_normalised=True, uses_reference=False),
}


@dataclass
class Config:
    """DPO and its variants. `farm train dpo configs/train_dpo.yaml` or `farm.methods.dpo.run(Config(...))`."""

    policy: str = ""
    """path of the starting policy (usually the SFT model); also the reference unless `reference` is set"""
    preferences: str = ""
    """preference file read by `common.read_preferences`: annotations (output_1, output_2, p_output_2) or
    chosen/rejected records; ties and invalid preferences are dropped"""
    output_dir: str = "runs/dpo"
    """where `model/`, `metrics.json`, `metrics.jsonl` and the resumable `checkpoint/` go"""
    reference: str = ""
    """path of the frozen reference policy ('' = the starting policy)"""
    loss: str = "sigmoid"
    """one of LOSSES: sigmoid (DPO), ipo, length_normalised (SimPO-style, reference-free)"""
    beta: float = 0.1
    """inverse temperature β (IPO's τ). Not portable between summed and length-normalised log-probs"""
    margin: float = 0.0
    """target reward margin γ subtracted inside the sigmoid (SimPO's γ; 0 = plain DPO)"""
    nll_weight: float = 0.0
    """α of an added NLL term on the chosen response, α · (−log π(chosen) / |chosen|) per pair (RPO, Pang et al.
    2024; TRL's `rpo_alpha`). DPO alone lowers the chosen log-prob too, and with near-identical on-policy pairs
    (one wrong number apart) that mass goes to other wrong answers; the NLL term holds the chosen answer up"""
    max_prompt_tokens: int = 192
    """prompts are cut from the left to this many tokens"""
    max_response_tokens: int = 64
    """responses are cut from the right to this many tokens (EOS is then missing: a truncated answer)"""
    prompt_style: str = "alpaca"
    """alpaca or chat (the tokenizer's chat template)"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-4, schedule="constant",
                                                                   warmup_ratio=0.0))
    """optimisation and loop settings (`train.lr=...`, `train.per_device_batch_size=...`)"""

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")


# ----- tokenisation -----


def tokenize_pairs(tokenizer, examples: Sequence[dict], cfg: Config) -> list[dict]:
    """Add `tokens` = (prompt ids, chosen ids + EOS, rejected ids + EOS) to each example, once (not every step).
    Prompts keep their end (`max_prompt_tokens`), responses their start (`max_response_tokens`; then no EOS)."""
    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    eos = tokenizer.eos_token_id
    prompts, chosen, rejected = (ids([e[k] for e in examples]) for k in ("prompt", "chosen", "rejected"))
    return [{**e, "tokens": (p[-cfg.max_prompt_tokens:], (c + [eos])[:cfg.max_response_tokens],
                             (r + [eos])[:cfg.max_response_tokens])}
            for e, p, c, r in zip(examples, prompts, chosen, rejected)]


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids → (ids, mask), each (N, longest), padded on the left or the right."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def collate_pairs(tokenizer, examples: Sequence[dict], cfg: Config) -> dict[str, torch.Tensor]:
    """Examples {prompt, chosen, rejected[, tokens][, ref]} → 2B rows, chosen first then rejected: prompt_ids/mask
    (2B, P) left-padded, response_ids/mask (2B, R) right-padded, and `ref` (B, 2) when the examples carry it."""
    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, cfg)
    p, c, r = zip(*(e["tokens"] for e in examples))
    p_ids, p_mask = _pad(list(p) * 2, tokenizer.pad_token_id, left=True)
    r_ids, r_mask = _pad(list(c) + list(r), tokenizer.pad_token_id, left=False)
    batch = {"prompt_ids": p_ids, "prompt_mask": p_mask, "response_ids": r_ids, "response_mask": r_mask}
    if "ref" in examples[0]:
        batch["ref"] = torch.tensor([e["ref"] for e in examples], dtype=torch.float32)
    return batch


def sequence_logprobs(model, batch: dict, length_normalised: bool) -> torch.Tensor:
    """Summed (or averaged) log-prob of each response. → (2B,) fp32."""
    lp = response_logprobs_tail(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                                batch["response_mask"])
    m = batch["response_mask"].float()
    total = (lp * m).sum(-1)  # (2B,)
    return total / m.sum(-1).clamp(min=1) if length_normalised else total


@torch.no_grad()
def precompute_reference(ref_model, tokenizer, examples: Sequence[dict], cfg: Config,
                         batch_size: int = 32) -> list[dict]:
    """Each example with `ref` = [log π_ref(chosen), log π_ref(rejected)] added, computed once in eval mode
    (zeros for a reference-free loss)."""
    loss = LOSSES[cfg.loss]
    if not loss.uses_reference:
        return [{**e, "ref": [0.0, 0.0]} for e in examples]
    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, cfg)
    device = next(ref_model.parameters()).device
    was_training = ref_model.training
    ref_model.eval()
    out = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        b = {k: v.to(device) for k, v in collate_pairs(tokenizer, chunk, cfg).items()}
        lp = sequence_logprobs(ref_model, b, loss.length_normalised).cpu()
        out += [{**e, "ref": [lp[i].item(), lp[len(chunk) + i].item()]} for i, e in enumerate(chunk)]
    ref_model.train(was_training)
    return out


# ----- the per-micro-batch loss the shared loop calls -----


def pair_loss_sum(model, batch: dict, cfg: Config) -> tuple[torch.Tensor, dict]:
    """Σ per-pair loss over the micro-batch (the loop divides by the pairs in the whole step) and mean stats."""
    loss_def = LOSSES[cfg.loss]
    lp = sequence_logprobs(model, batch, loss_def.length_normalised)
    B = lp.shape[0] // 2
    chosen, rejected, ref = lp[:B], lp[B:], batch["ref"]  # (B,), (B,), (B, 2)
    losses = loss_def.fn(chosen, rejected, ref[:, 0], ref[:, 1], beta=cfg.beta, margin=cfg.margin)  # (B,)
    if cfg.nll_weight:
        lp_sum = lp if not loss_def.length_normalised else sequence_logprobs(model, batch, False)
        n_tok = batch["response_mask"][:B].sum(-1).clamp(min=1)  # (B,) tokens of each chosen response
        losses = losses + cfg.nll_weight * (-lp_sum[:B] / n_tok)  # per-token NLL of chosen (B,)
    with torch.no_grad():
        r_c, r_r = cfg.beta * (chosen - ref[:, 0]), cfg.beta * (rejected - ref[:, 1])  # implicit rewards
        stats = {"reward_margin": (r_c - r_r).mean().item(), "accuracy": (r_c > r_r).float().mean().item(),
                 "logp_chosen": chosen.mean().item(), "logp_rejected": rejected.mean().item(),
                 "reward_chosen": r_c.mean().item(), "reward_rejected": r_r.mean().item()}
    return losses.sum(), stats


def train(model, tokenizer, examples: Sequence[dict], cfg: Config, ref_model=None,
          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train `model` in place on examples {prompt, chosen, rejected} (strings; `ref` optional: precomputed
    reference log-probs [chosen, rejected]). Without `ref`, they are computed first from `ref_model`, or from
    `model` itself before any update. Returns `common.fit`'s result (steps, loss, history, model)."""
    disable_dropout(model)  # the reference numbers come from an eval-mode forward: same forward when training
    if "tokens" not in examples[0]:
        examples = tokenize_pairs(tokenizer, examples, cfg)
    if "ref" not in examples[0]:
        examples = precompute_reference(ref_model if ref_model is not None else model, tokenizer, examples, cfg)

    def make_batch(chunk: list) -> tuple[dict, float]:
        return collate_pairs(tokenizer, chunk, cfg), float(len(chunk))

    return fit(model, tokenizer, examples, make_batch, lambda m, b: pair_loss_sum(m, b, cfg), cfg.train,
               out_dir=out_dir, desc=f"dpo[{cfg.loss}]")


# ----- file-level entry point -----


def run(cfg: Config) -> dict[str, Any]:
    """Read `cfg.preferences`, train from `cfg.policy`, write `model/`, `metrics.json` and `metrics.jsonl` (one
    row per step) under `cfg.output_dir`; a re-run resumes from `checkpoint/`."""

    from farm.errors import FarmError
    from farm.io import atomic_write_text
    from farm.models.loading import load_causal_lm

    if not cfg.policy or not cfg.preferences:
        raise FarmError("dpo needs `policy` and `preferences`", field="policy" if not cfg.policy else "preferences")
    torch.manual_seed(cfg.train.seed)
    model, tok = load_causal_lm(cfg.policy, device=cfg.train.device, dtype=cfg.train.dtype)
    examples = [{"prompt": prompt_text(r, tok, cfg.prompt_style), "chosen": r["chosen"], "rejected": r["rejected"]}
                for r in read_preferences(cfg.preferences)]
    ref_model = None
    if cfg.reference and LOSSES[cfg.loss].uses_reference:
        ref_model, _ = load_causal_lm(cfg.reference, device=cfg.train.device, dtype=cfg.train.dtype, tokenizer=tok)
    examples = precompute_reference(ref_model if ref_model is not None else model, tok, examples, cfg)
    del ref_model  # reference log-probs are cached: the reference model is not needed any more
    result = train(model, tok, examples, cfg, out_dir=cfg.output_dir)
    out = Path(cfg.output_dir)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in result["history"]))
    return finish_run(out, result, tok, {"method": "dpo", "loss_type": cfg.loss, "pairs": len(examples)})
