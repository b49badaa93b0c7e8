"""LoRA through `peft` (optional: `pip install farm[lora]`), and the reference model for free.

With LoRA the base weights never change, so the reference policy π_ref of PPO/DPO/RLOO is the same network
with the adapter switched off: one copy of the weights on the GPU instead of two (docs/scaling.md). At
initialisation LoRA's B matrices are zero, so the policy starts exactly at the reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from farm.errors import FarmError

# Every linear of a Llama/Qwen/Mistral block (what the LoRA papers after QLoRA found worth adapting).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _peft():
    try:
        import peft
    except ImportError:
        raise FarmError("LoRA needs the 'peft' package", field="lora_rank",
                        hint="pip install 'farm[lora]' (or peft>=0.11), or set lora_rank=0") from None
    return peft


def add_lora(model, rank: int = 16, alpha: float | None = None, dropout: float = 0.0,
             target_modules: Sequence[str] = DEFAULT_TARGETS, task_type: str = "CAUSAL_LM"):
    """`model` wrapped as a peft `PeftModel` whose only trainable parameters are the LoRA matrices.

    alpha defaults to 2·rank (scale alpha/rank = 2). `task_type="SEQ_CLS"` keeps a reward/value head trainable.
    """
    peft = _peft()
    if rank <= 0:
        raise FarmError(f"LoRA rank must be positive, got {rank}", field="lora_rank")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                             target_modules=list(target_modules), task_type=task_type, bias="none")
    return peft.get_peft_model(model, config)


def is_lora(model) -> bool:
    try:
        import peft
    except ImportError:
        return False
    return isinstance(model, peft.PeftModel)


@contextmanager
def reference_via_disabled_adapter(model) -> Iterator[object]:
    """Inside the block `model` computes the reference policy (adapter off, no grad, eval mode);
    on exit the adapter, grad mode and train/eval mode are restored.

        with reference_via_disabled_adapter(policy) as ref:
            ref_logprobs = response_logprobs(ref, ...)
    """
    import torch

    if not is_lora(model):
        raise FarmError("reference via a disabled adapter needs a LoRA (peft) model",
                        field="reference", hint="wrap the policy with farm.models.lora.add_lora first")
    was_training = model.training
    model.eval()  # LoRA dropout off, as for any reference forward
    try:
        with model.disable_adapter(), torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def merged_copy(model):
    """A plain `transformers` model with the adapter folded into the weights (for saving a checkpoint every
    other part of farm can load without peft). `model` itself is left untouched."""
    import copy

    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
