"""Data parallelism of the RL loops (PPO, RLOO, GRPO): which share of each rollout batch this process
samples, and the few collectives that make N processes take the update one process takes on the whole batch.

Under `accelerate launch --num_processes N` (or torchrun) every process runs the same loop with the same seed, so
the numpy stream that picks each step's prompts is identical everywhere; process r then samples and scores only
its contiguous block of the prompt groups (`local_groups`; PPO: of the prompts), with its own sampling seed. The update stays exact:

- a minibatch is the union of every process's local minibatch (`minibatch_size / N` rows each);
- its loss normaliser (`n_units`: responses or real tokens) is summed over processes before any row is divided
  by it (`all_sum`), so Σ_processes Σ_rows loss_row / n_units is the one-process loss;
- gradients are summed over processes (`sum_grads`) before clipping and the optimiser step, so every process
  applies the same step and the weights stay equal;
- batch statistics (advantage whitening, the adaptive KL's mean, logged means) are reduced over processes
  (`mean_std`, `masked_whiten`, `mean`).

Sampling differs from a one-process run (each process draws its own tokens), so a 2-process run is not the
1-process run token for token; given the same rollout rows, its update is (tests/test_methods_rl_dist.py).
One process (the default, and every `farm compare` row) never touches torch.distributed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from farm.errors import FarmError


@dataclass(frozen=True)
class Shard:
    """This process's place: rank r of `world` processes (world 1 = no collectives at all)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local(self, n: int, field: str) -> int:
        """This process's share of a global count `n` (a minibatch, the prompts of a step); `n` must divide."""
        if n % self.world:
            raise FarmError(f"{field} = {n} does not divide among {self.world} processes", field=field,
                            hint=f"use a multiple of {self.world}")
        return n // self.world

    def local_groups(self, n_groups: int) -> slice:
        """The contiguous block of a step's `n_groups` prompt groups this process samples."""
        per = n_groups // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def local_draw(self, chosen, seed: int) -> tuple:
        """This process's block of a step's drawn prompts (or prompt groups) and its own sampling seed; unchanged
        in one process."""
        if self.world == 1:
            return chosen, seed
        import numpy as np

        return chosen[self.local_groups(len(chosen))], int(np.random.default_rng([seed, self.rank]).integers(2**62))

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over processes (a new tensor; x itself when world is 1)."""
        if self.world == 1:
            return x
        import torch.distributed as dist

        y = x.detach().clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    def all_max(self, n: int) -> int:
        """The largest `n` of any process (e.g. how many minibatches the busiest process has)."""
        if self.world == 1:
            return n
        import torch.distributed as dist

        t = torch.tensor([n], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def mean_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (Bessel) of the values of every process's `x` together."""
        if self.world == 1:
            return x.mean(), x.std()
        s = self.all_sum(torch.stack([x.double().sum(), (x.double() ** 2).sum(),
                                      torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)]))
        n = s[2]
        mean = s[0] / n
        var = (s[1] - n * mean ** 2) / (n - 1).clamp(min=1)
        return mean.to(x.dtype), var.clamp(min=0).sqrt().to(x.dtype)

    def masked_whiten(self, x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """maths.masked_whiten over every process's masked positions together (mean, unbiased variance)."""
        from farm.methods import maths

        if self.world == 1:
            return maths.masked_whiten(x, mask, eps=eps)
        n = self.all_sum(mask.sum().double())
        mean = self.all_sum((x * mask).sum().double()) / n.clamp(min=1)
        var = self.all_sum((((x - mean) * mask) ** 2).sum().double()) / (n - 1).clamp(min=1)
        return ((x - mean) * torch.rsqrt(var + eps)).to(x.dtype) * mask

    def mean(self, x: torch.Tensor) -> float:
        """The mean of every process's `x` together, as a float (for the logged metrics)."""
        return float(self.mean_std(x.float())[0]) if self.world > 1 else x.mean().item()

    def sum_grads(self, params) -> None:
        """Sum every parameter's gradient over processes (a missing gradient counts as zeros)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def sum_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Each stat summed over processes (the minibatch loop's stats are already shares of the global batch)."""
        if self.world == 1 or not stats:
            return stats
        keys = sorted(stats)
        t = self.all_sum(torch.tensor([stats[k] for k in keys], dtype=torch.float64))
        return {k: float(v) for k, v in zip(keys, t.tolist())}


SINGLE = Shard()


def current_shard(device: str = "cpu") -> Shard:
    """The process's Shard: under `accelerate launch`/torchrun (WORLD_SIZE > 1) it joins the process group (gloo on
    CPU, as `loop.make_accelerator` does); else one process, no collectives."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        from farm.models.loading import pick_device

        PartialState(cpu=pick_device(device) == "cpu")
    return Shard(dist.get_rank(), dist.get_world_size())


def minibatches(n_rows: int, size: int, shard: Shard) -> int:
    """How many minibatches of `size` local rows every process runs per epoch (the busiest process's count, so that
    the collectives of each optimiser step meet; a process out of rows joins with an empty minibatch)."""
    return shard.all_max(math.ceil(n_rows / size) if n_rows else 0)
