"""Pools of judges and the random swap of outputs.

- `RandomSwap(judge, salt)`: for each pair, a coin drawn from `pair_rng(seed, pair, salt)` decides whether the
  judge sees the outputs swapped; the verdict is mapped back (p → 1 - p) and the annotation carries the original
  pair, with `meta["swapped"]`. The shown pair carries `meta["swapped"] = True`, which the cache stores beside
  the verdict (the shown pair's key already differs).
- `Pool(name, members, weights)`: for each pair, one member drawn with probability ∝ weight from
  `pair_rng(seed, pair, "pool:" + name)`: the draw depends on the seed and the whole pair (instruction, input,
  both outputs), never on the batch or the order the pairs arrive in. Members are judged concurrently (threads),
  each on all of its pairs at once, so each LLM member keeps its own concurrency limit busy.

Noise (flip, position/length/list bias) comes from farm/annotators/noise.py; `with_noise` composes it from a
`NoiseConfig`, flip acting last. In a pool a member's noise sits inside the swap, so a position bias acts on the
order the judge saw, as it does in a real judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from farm.annotators.config import NoiseConfig
from farm.annotators.context import in_threads
from farm.types import Annotation, Annotator, Pair, pair_rng


class RandomSwap:
    """Show each pair in a random order (seeded by the pair); undo the swap in the verdict."""

    def __init__(self, base: Annotator, salt: str):
        self.base, self.salt, self.name = base, salt, base.name

    def identity(self) -> str:
        return f"random_swap({self.salt})<{self.base.identity()}>"

    def flags(self, pairs: Sequence[Pair], seed: int) -> list[bool]:
        return [bool(pair_rng(seed, p, f"swap:{self.salt}").random() < 0.5) for p in pairs]

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        flags = self.flags(pairs, seed)
        shown = [replace(p.swapped(), meta={**p.meta, "swapped": True}) if f else p for p, f in zip(pairs, flags)]
        out = []
        for pair, swapped, ann in zip(pairs, flags, self.base.annotate(shown, seed=seed), strict=True):
            p = ann.preference
            if swapped and p is not None:
                p = 1.0 - p
            out.append(replace(ann, pair=pair, preference=p, meta={**ann.meta, "swapped": swapped}))
        return out


class Pool:
    """One member per pair, drawn ∝ weight from the seed and the whole pair."""

    def __init__(self, name: str, members: Sequence[Annotator], weights: Sequence[float]):
        if len(members) != len(weights) or not members:
            raise ValueError("a pool needs one weight per member and at least one member")
        w = np.asarray(weights, dtype=float)
        if not (np.all(w > 0) and np.isfinite(w).all()):
            raise ValueError(f"pool weights must be positive, got {list(weights)}")
        self.name, self.members, self.probs = name, list(members), w / w.sum()

    def identity(self) -> str:
        inner = ";".join(f"{p:.6g}*{m.identity()}" for p, m in zip(self.probs, self.members))
        return f"pool({self.name})[{inner}]"

    def assign(self, pairs: Sequence[Pair], seed: int) -> list[int]:
        """The member index of each pair."""
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
                out[i] = replace(ann, meta={**ann.meta, "pool": self.name, "member": m})
        return out  # type: ignore[return-value]


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
