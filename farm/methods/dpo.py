"""Direct Preference Optimisation (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290) and its variants:
IPO (Azar et al. 2023, https://arxiv.org/abs/2310.12036), a length-normalised, reference-free loss in the style of
SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734), and two losses for labels flipped with probability ε:
conservative DPO (cDPO, label smoothing; Mitchell 2023, https://ericmitchell.ai/cdpo.pdf) and robust DPO
(Chowdhury et al. 2024, https://arxiv.org/abs/2403.00409), unbiased under that noise. Implementation details:
docs/methods/dpo.md.

Departures from the papers / other implementations (each on purpose):
- a variant is a separate small loss function in `LOSSES` (name → `PairLoss`), never an `elif` in the loop;
- reference log-probs are computed once, up front, in eval mode without gradients, and the reference model is
  then dropped (the same numbers TRL gets with `precompute_ref_log_probs=True`);
- chosen and rejected responses go through ONE forward pass (2B rows), left-padded prompt + right-padded
  response with position ids from the mask, and the response ends with EOS (EOS is an action);
- the loss of an optimiser step is Σ(per-pair loss) / (pairs in the step), so splitting the step into
  micro-batches (gradient accumulation) gives the same gradient (tests/test_methods_zoo2.py checks 1×8 = 8×1);
  the pair machinery is the floor's `pairs.train_pairs` and the loop `loop.fit` (accelerate, checkpoint + resume,
  NaN guard);
- β is NOT portable between summed (DPO, IPO) and length-normalised (SimPO-style) log-probs: averaged
  log-ratios are ~|y| times smaller, so the length-normalised loss wants a β roughly |y| times larger
  (SimPO uses β = 2–2.5 where DPO uses 0.1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from farm.methods.data import prompt_text, read_preferences
from farm.methods.loop import TrainConfig, finish_run, maybe_lora
from farm.methods.pairs import PairLoss, precompute_reference, train_pairs

# ----- the losses (one small function each; per-pair losses, shape (B,)) -----


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float, margin: float = 0.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Sigmoid DPO: -log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)] - margin). All (B,) → (B,)."""
    # Implicit reward difference h (B,): how much more the policy moved towards chosen than rejected
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    # Policy loss (B,)
    return -F.logsigmoid(beta * h - margin)


def ipo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float, margin: float = 0.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO: (h - 1/(2β))², h the log-ratio difference (the paper's τ is our β). `margin` is unused: the target
    1/(2β) already plays that role. All (B,) → (B,)."""
    # Log-ratio difference h (B,)
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    # Squared regression of h onto 1/(2β) (B,)
    return (h - 1.0 / (2.0 * beta)) ** 2


def length_normalised_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                           ref_rejected: torch.Tensor, beta: float, margin: float = 0.0,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """SimPO-style: -log σ(β(avg log π_c - avg log π_r) - γ) on AVERAGE per-token log-probs, reference-free
    (the reference terms are accepted for a uniform signature and ignored). γ = `margin`. (B,) → (B,)."""
    # Length-normalised reward difference (B,)
    h = chosen - rejected
    # Policy loss with target margin γ (B,)
    return -F.logsigmoid(beta * h - margin)


def cdpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
              beta: float, margin: float = 0.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Conservative DPO: the sigmoid loss against a label that is right with probability 1 − ε,
    −(1 − ε) log σ(βh) − ε log σ(−βh) (ε = `label_smoothing`; TRL's sigmoid with label_smoothing). (B,) → (B,)."""
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    # Policy loss: cross-entropy with the smoothed label (B,)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h - margin) - label_smoothing * F.logsigmoid(-beta * h + margin)


def robust_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                beta: float, margin: float = 0.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Robust DPO: [(1 − ε) ℓ(βh) − ε ℓ(−βh)] / (1 − 2ε) with ℓ(z) = −log σ(z), ε the flip rate (`label_smoothing`
    < ½). Its expectation over labels flipped with probability ε is the clean loss ℓ(βh) (tested by hand). (B,)."""
    eps = label_smoothing
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    # Policy loss: the noisy label's loss, de-biased (B,)
    return (-(1 - eps) * F.logsigmoid(beta * h - margin) + eps * F.logsigmoid(-beta * h + margin)) / (1 - 2 * eps)


LOSSES: dict[str, PairLoss] = {
    "sigmoid": PairLoss(dpo_loss),
    "ipo": PairLoss(ipo_loss),
    "length_normalised": PairLoss(length_normalised_loss, length_normalised=True, uses_reference=False),
    "cdpo": PairLoss(cdpo_loss),
    "robust": PairLoss(robust_loss),
}


@dataclass
class Config:
    """DPO and its variants. `farm train dpo configs/train_dpo.yaml` or `farm.methods.dpo.run(Config(...))`."""

    policy: str = ""
    """path of the starting policy (usually the SFT model); also the reference unless `reference` is set"""
    preferences: str = ""
    """preference file read by `data.read_preferences`: annotations (output_1, output_2, p_output_2) or
    chosen/rejected records; ties and invalid preferences are dropped"""
    output_dir: str = "runs/dpo"
    """where `model/`, `metrics.json`, `metrics.jsonl` and the resumable `checkpoint/` go"""
    reference: str = ""
    """path of the frozen reference policy ('' = the starting policy)"""
    loss: str = "sigmoid"
    """one of LOSSES: sigmoid (DPO), ipo, length_normalised (SimPO-style, reference-free), cdpo, robust"""
    beta: float = 0.1
    """inverse temperature β (IPO's τ). Not portable between summed and length-normalised log-probs"""
    margin: float = 0.0
    """target reward margin γ subtracted inside the sigmoid (SimPO's γ; 0 = plain DPO)"""
    label_smoothing: float = 0.0
    """ε, the share of flipped labels cdpo and robust assume (0 ≤ ε < 0.5; AlpacaFarm's pool flips 0.25)"""
    nll_weight: float = 0.0
    """α of an added NLL term on the chosen response, α · (−log π(chosen) / |chosen|) per pair (RPO, Pang et al.
    2024; TRL's `rpo_alpha`). DPO alone lowers the chosen log-prob too, and with near-identical on-policy pairs
    (one wrong number apart) that mass goes to other wrong answers; the NLL term holds the chosen answer up"""
    max_prompt_tokens: int = 192
    """prompts are cut from the left to this many tokens"""
    max_response_tokens: int = 64
    """responses are cut from the right to this many tokens (EOS is then missing: a truncated answer)"""
    shared_prefix: bool = False
    """run each pair's prompt once for both responses (`rollout.sequence_logprobs`): the same loss to float
    rounding, about half the compute on a real model with long prompts (bench/RESULTS.md, #20); one process"""
    prompt_style: str = "alpaca"
    """alpaca or chat (the tokenizer's chat template)"""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, schedule="constant", warmup_ratio=0.0,
                                                                   epochs=2.0, per_device_batch_size=32))
    """optimisation and loop settings: tiny models lr 1e-4 (the largest that does not lower gold quality when the
    labels ARE gold, bench/RESULTS.md "RL ceiling"), 2 epochs, 32 pairs per step; a 7B full fine-tune ~5e-7 (DPO
    paper, Zephyr)"""

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


# ----- training -----


def train(model, tokenizer, examples: Sequence[dict], cfg: Config, ref_model=None,
          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train `model` in place on examples {prompt, chosen, rejected} (strings; `ref` optional: precomputed
    reference log-probs [chosen, rejected]) with `LOSSES[cfg.loss]` (`pairs.train_pairs`). Returns `loop.fit`'s
    result (steps, loss, history, model)."""
    return train_pairs(model, tokenizer, examples, LOSSES[cfg.loss], cfg.train, beta=cfg.beta, margin=cfg.margin,
                       label_smoothing=cfg.label_smoothing, nll_weight=cfg.nll_weight, max_prompt_tokens=cfg.max_prompt_tokens,
                       max_response_tokens=cfg.max_response_tokens, ref_model=ref_model, out_dir=out_dir,
                       desc=f"dpo[{cfg.loss}]", shared_prefix=cfg.shared_prefix)


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
    examples = precompute_reference(ref_model if ref_model is not None else model, tok, examples, LOSSES[cfg.loss],
                                    cfg.max_prompt_tokens, cfg.max_response_tokens)
    del ref_model  # reference log-probs are cached: the reference model is not needed any more
    model = maybe_lora(model, cfg.train)  # LoRA when train.lora_r > 0 (after the reference: it is the base model)
    result = train(model, tok, examples, cfg, out_dir=cfg.output_dir)
    out = Path(cfg.output_dir)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in result["history"]))
    return finish_run(out, result, tok, {"method": "dpo", "loss_type": cfg.loss, "pairs": len(examples)})
