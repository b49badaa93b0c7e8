"""The tiny-model defaults `farm compare` gives each method (until each method's Config carries them itself).

Transitional: issue #23 moves these into each method's own Config; until then they are here and only here.
"""

from __future__ import annotations

from typing import Any

TINY: dict[str, dict[str, Any]] = {
    "sft": {"max_len": 160, "train": {"lr": 3e-3, "epochs": 4.0, "per_device_batch_size": 32, "schedule": "cosine"}},
    "reward": {"max_len": 160, "train": {"lr": 1e-3, "epochs": 3.0, "per_device_batch_size": 32,
                                          "schedule": "cosine"}},
    "expert_iteration": {"rounds": 1, "n": 8, "prompts_per_round": 400, "temperature": 1.0, "max_len": 160,
                         "train": {"lr": 1e-3, "epochs": 2.0, "per_device_batch_size": 32}},
    # learning rates: the largest that do not lower gold quality when the reward IS gold (docs/compare.md)
    "ppo": {"steps": 40, "rollout_batch_size": 32, "minibatch_size": 16, "micro_batch_size": 16, "epochs": 2,
            "lr": 1e-4, "value_lr": 1e-3, "kl_coef": 0.05, "save_every": 10},
    "dpo": {"beta": 0.1, "train": {"lr": 1e-4, "epochs": 2.0, "per_device_batch_size": 32}},
    "rloo": {"steps": 30, "prompts_per_step": 8, "k": 4, "lr": 3e-4},
    "online_dpo": {"rounds": 20, "prompts_per_round": 256, "k": 4, "temperature": 0.7,
                   "train": {"lr": 1e-4, "epochs": 1.0, "schedule": "constant", "warmup_ratio": 0.0,
                             "per_device_batch_size": 32}},
}


def tiny_defaults(method: str, fields: dict) -> dict[str, Any]:
    """The keys of TINY[method] that the method's Config has."""
    return {k: v for k, v in TINY.get(method, {}).items() if k in fields}
