"""Pools of judges and the random swap of outputs.

- `RandomSwap(judge, salt)`: for each pair, a coin drawn from `pair_rng(seed, pair, "swap:" + salt)` decides
  whether the judge sees the outputs swapped (`farm.annotators.noise.Swap` at rate 0.5, the one swap wrapper);
  the verdict is mapped back (p → 1 - p) and the annotation carries the original pair, with `meta["swapped"]`.
  The shown pair carries `meta["swapped"] = True`, which the cache stores beside the verdict (the shown pair's
  key already differs).
- `Pool(name, members, weights, draw=...)`: for each pair one member, drawn from the seed and the whole pair
  (instruction, input, both outputs), never from the batch or the order the pairs arrive in. Members are judged
  concurrently (threads), each on all of its pairs at once, so each LLM member keeps its own concurrency limit
  busy. Two draws (a pool folder's `draw:`):
  - `weighted` (default): member ∝ weight from `pair_rng(seed, pair, "pool:" + name)`; each verdict keeps its
    member's name as `annotator`, with `meta["pool"]` and `meta["member"]` (the member's index).
  - `alpacafarm`: AlpacaFarm's annotator pool: a uniform member from a salt of the members' identities, so a
    flipped training pool and the evaluation pool over the same members pick the same member for a pair; the
    pool speaks as one annotator (its name as `annotator`, the member's name in `meta["member"]`).

Noise (flip, position/length/list bias) comes from farm/annotators/noise.py; `with_noise` composes it from a
`NoiseConfig`, flip acting last. In a pool a member's noise sits inside the swap, so a position bias acts on the
order the judge saw, as it does in a real judge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from farm.annotators.config import NoiseConfig
from farm.annotators.context import in_threads
from farm.annotators.noise import Swap
from farm.types import Annotation, Annotator, Pair, pair_rng, stable_seed

Draw = Literal["weighted", "alpacafarm"]


def RandomSwap(base: Annotator, salt: str) -> Swap:
    """Show each pair in a random order (a coin seeded by the pair and `salt`); undo the swap in the verdict."""
    return Swap(base, rate=0.5, salt=salt)


class Pool:
    """One member per pair, drawn from the seed and the whole pair (see the module docstring for `draw`)."""

    def __init__(self, name: str, members: Sequence[Annotator], weights: Sequence[float] | None = None,
                 draw: Draw = "weighted"):
        weights = [1.0] * len(members) if weights is None else list(weights)
        if len(members) != len(weights) or not members:
            raise ValueError("a pool needs one weight per member and at least one member")
        w = np.asarray(weights, dtype=float)
        if not (np.all(w > 0) and np.isfinite(w).all()):
            raise ValueError(f"pool weights must be positive, got {list(weights)}")
        if draw not in ("weighted", "alpacafarm"):
            raise ValueError(f"pool draw must be 'weighted' or 'alpacafarm', got {draw!r}")
        if draw == "alpacafarm" and len(set(weights)) > 1:
            raise ValueError(f"an alpacafarm pool draws its members uniformly: weights must be equal, got {weights}")
        self.name, self.members, self.probs, self.draw = name, list(members), w / w.sum(), draw

    def identity(self) -> str:
        if self.draw == "alpacafarm":
            return json.dumps({"pool": self.name, "members": [m.identity() for m in self.members]})
        inner = ";".join(f"{p:.6g}*{m.identity()}" for p, m in zip(self.probs, self.members))
        return f"pool({self.name})[{inner}]"

    def assign(self, pairs: Sequence[Pair], seed: int) -> list[int]:
        """The member index of each pair."""
        if self.draw == "alpacafarm":
            salt = f"pool:{stable_seed(*(m.identity() for m in self.members))}"
            return [int(pair_rng(seed, p, salt).integers(len(self.members))) for p in pairs]
        return [int(pair_rng(seed, p, f"pool:{self.name}").choice(len(self.members), p=self.probs)) for p in pairs]

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        pairs = list(pairs)
        chosen = self.assign(pairs, seed)
        groups = {m: [i for i, c in enumerate(chosen) if c == m] for m in sorted(set(chosen))}
        calls = [lambda m=m, idx=idx: self.members[m].annotate([pairs[i] for i in idx], seed=seed)
                 for m, idx in groups.items()]
        out: list[Annotation | None] = [None] * len(pairs)
        for (m, idx), anns in zip(groups.items(), in_threads(calls)):
            if len(anns) != len(idx):
                raise RuntimeError(f"pool member {self.members[m].name} returned {len(anns)} of {len(idx)}")
            for i, ann in zip(idx, anns):
                out[i] = self._label(ann, m)
        return out  # type: ignore[return-value]

    def _label(self, ann: Annotation, m: int) -> Annotation:
        if self.draw == "alpacafarm":
            return replace(ann, annotator=self.name, meta={**ann.meta, "member": self.members[m].name})
        return replace(ann, meta={**ann.meta, "pool": self.name, "member": m})


def with_noise(annotator: Annotator, noise: NoiseConfig) -> Annotator:
    """Compose the noise wrappers of `noise` around `annotator` (bias first, flip last)."""
    if noise.is_empty():
        return annotator
    from farm.annotators import noise as wrappers

    transforms = [make(value) for make, value in ((wrappers.position_bias, noise.position_bias),
                                                   (wrappers.length_bias, noise.length_bias),
                                                   (wrappers.list_bias, noise.list_bias),
                                                   (wrappers.flip, noise.flip)) if value]
    return wrappers.chain(annotator, *transforms)
