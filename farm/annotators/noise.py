"""Composable noise and bias wrappers for annotators, in the style of optax transforms.

Each wrapper is itself an `Annotator` (name, identity(), annotate(pairs, seed)) around another one:

- `flip(judge, rate)`: with probability `rate` per pair the verdict p becomes 1 - p (AlpacaFarm's 25% training
  noise).
- `position_bias(judge, strength)`: with probability |strength| the verdict is replaced by "output_1 wins"
  (strength > 0) or "output_2 wins" (strength < 0).
- `length_bias(judge, strength)`: with probability |strength| the verdict is replaced by "the longer output
  wins" (strength > 0) or "the shorter wins" (< 0); equal lengths are left alone. Length is in characters,
  as AlpacaEval measures it.
- `list_bias(judge, strength)`: same, for "the output that contains a list wins" when exactly one does.
- `swap(judge)`: the judge sees the pair with outputs swapped; the verdict is mapped back (p → 1 - p) and the
  annotation carries the original pair, so callers never see the swap. `Swap(judge, rate, salt)` swaps on a
  seeded coin per pair instead: a judge's `randomize_order` (`farm.annotators.pool.RandomSwap`).
- `chain(judge, t1, t2, ...)`: applies the transforms in order, innermost first:
  `chain(judge, position_bias(.1), length_bias(.2), flip(.25))` == `flip(length_bias(position_bias(judge, .1),
  .2), .25)`, so the flip is the last thing that happens to a verdict.

Called without an annotator, every wrapper returns a transform (a function annotator → annotator):
`flip(.25)(judge) == flip(judge, .25)`.

Randomness: each wrapper draws from `pair_rng(seed, pair, salt)` where the salt names the wrapper, its
parameters and the wrapped judge, so a pair's fate does not depend on the batch it arrives in, and two wrappers
(or the same wrapper around two pool members) draw independently. Invalid verdicts (None) pass through untouched.
What a wrapper did is recorded in `annotation.meta["noise"]` (a list, outermost last).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from farm.types import Annotation, Annotator, Pair, pair_rng

Transform = Callable[[Annotator], Annotator]


def _note(ann: Annotation, what: str) -> Annotation:
    meta = dict(ann.meta)
    meta["noise"] = [*meta.get("noise", []), what]
    return replace(ann, meta=meta)


def _check_strength(value: float, what: str, signed: bool) -> float:
    value = float(value)
    lo = -1.0 if signed else 0.0
    if not lo <= value <= 1.0:
        raise ValueError(f"{what} must be in [{lo:g}, 1], got {value}")
    return value


@dataclass
class _Override:
    """Shared machinery: with probability |strength| per pair, replace the verdict by `target(pair, p)`.

    Subclasses define `kind` and `target`; `target` returns the new preference or None to leave the verdict.
    """

    base: Annotator
    strength: float
    kind = "override"

    def __post_init__(self) -> None:
        self.strength = _check_strength(self.strength, f"{self.kind} strength", signed=self.kind != "flip")
        self.name = f"{self.base.name}+{self.kind}({self.strength:g})"

    def identity(self) -> str:
        return f"{self.kind}(strength={self.strength!r})<{self.base.identity()}>"

    def target(self, pair: Pair, p: float) -> float | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        out = []
        for ann in self.base.annotate(pairs, seed=seed):
            p = ann.preference
            if p is not None and self.strength != 0.0:
                u = pair_rng(seed, ann.pair, f"{self.identity()}").random()
                if u < abs(self.strength):
                    new = self.target(ann.pair, p)
                    if new is not None and new != p:
                        ann = _note(replace(ann, preference=new), self.kind)
            out.append(ann)
        return out


class _Flip(_Override):
    kind = "flip"

    def target(self, pair: Pair, p: float) -> float | None:
        return 1.0 - p


class _PositionBias(_Override):
    kind = "position_bias"

    def target(self, pair: Pair, p: float) -> float | None:
        return 0.0 if self.strength > 0 else 1.0


class _LengthBias(_Override):
    kind = "length_bias"

    def target(self, pair: Pair, p: float) -> float | None:
        n1, n2 = len(pair.output_1), len(pair.output_2)
        if n1 == n2:
            return None
        second_longer = n2 > n1
        return float(second_longer == (self.strength > 0))


_LIST_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.MULTILINE)


def contains_list(text: str) -> bool:
    """Whether `text` has a bulleted or numbered list item (at least two items, or one inline "1." item).

    >>> contains_list("- a\\n- b"), contains_list("1. x"), contains_list("plain text"), contains_list("a - b")
    (True, True, False, False)
    """
    return bool(_LIST_RE.search(text))


class _ListBias(_Override):
    kind = "list_bias"

    def target(self, pair: Pair, p: float) -> float | None:
        l1, l2 = contains_list(pair.output_1), contains_list(pair.output_2)
        if l1 == l2:
            return None
        return float(l2 == (self.strength > 0))


@dataclass
class Swap:
    """Show the judge each pair with its outputs swapped and undo it in the verdict (p → 1 - p); the annotation
    carries the original pair and `meta["swapped"]`, the shown pair `meta["swapped"] = True` (which the cache
    stores beside the verdict). `rate` 1: every pair (the `swap` transform, noted in `meta["noise"]`); `rate` < 1:
    a coin per pair from `pair_rng(seed, pair, "swap:" + salt)` (a judge's `randomize_order`, `RandomSwap`)."""

    base: Annotator
    rate: float = 1.0
    salt: str = ""

    def __post_init__(self) -> None:
        self.rate = _check_strength(self.rate, "swap rate", signed=False)
        self.name = f"{self.base.name}+swap" if self.rate == 1.0 else self.base.name

    def identity(self) -> str:
        if self.rate == 1.0:
            return f"swap<{self.base.identity()}>"
        rate = "" if self.rate == 0.5 else f",rate={self.rate!r}"
        return f"random_swap({self.salt}{rate})<{self.base.identity()}>"

    def flags(self, pairs: Sequence[Pair], seed: int) -> list[bool]:
        """Which pairs are shown swapped."""
        if self.rate == 1.0:
            return [True] * len(pairs)
        return [bool(pair_rng(seed, p, f"swap:{self.salt}").random() < self.rate) for p in pairs]

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        flags = self.flags(pairs, seed)
        shown = [replace(p.swapped(), meta={**p.meta, "swapped": True}) if f else p for p, f in zip(pairs, flags)]
        out = []
        for pair, swapped, ann in zip(pairs, flags, self.base.annotate(shown, seed=seed), strict=True):
            p = ann.preference
            if swapped and p is not None:
                p = 1.0 - p
            ann = replace(ann, pair=pair, preference=p, meta={**ann.meta, "swapped": swapped})
            out.append(_note(ann, "swap") if self.rate == 1.0 else ann)
        return out


def _wrapper(cls: type) -> Callable:
    """Turn a wrapper class into `f(annotator, strength)` that also works as `f(strength)` → transform."""

    def make(annotator_or_strength: Annotator | float, strength: float | None = None):
        if isinstance(annotator_or_strength, int | float) and not isinstance(annotator_or_strength, bool):
            if strength is not None:
                raise TypeError(f"{cls.kind}() takes (annotator, strength) or (strength), not two numbers")
            s = float(annotator_or_strength)
            _check_strength(s, f"{cls.kind} strength", signed=cls.kind != "flip")  # fail at definition time
            return lambda annotator: cls(annotator, s)
        if strength is None:
            raise TypeError(f"{cls.kind}(annotator, strength): strength is missing")
        return cls(annotator_or_strength, strength)

    make.__name__ = cls.kind
    return make


flip = _wrapper(_Flip)
flip.__doc__ = """Label flip: with probability `rate` per pair, p → 1 - p. `flip(rate)` returns a transform.

>>> from farm.annotators.noise import ConstantJudge
>>> j = flip(ConstantJudge(1.0), 1.0)
>>> [a.preference for a in j.annotate([Pair("i", "a", "b")])]
[0.0]
>>> flip(.25)(ConstantJudge(1.0)).identity()
'flip(strength=0.25)<constant(p=1.0)>'
"""
position_bias = _wrapper(_PositionBias)
position_bias.__doc__ = """With probability |strength| per pair prefer output_1 (strength > 0) or output_2 (< 0).

>>> from farm.annotators.noise import ConstantJudge
>>> [a.preference for a in position_bias(ConstantJudge(1.0), 1.0).annotate([Pair("i", "a", "b")])]
[0.0]
"""
length_bias = _wrapper(_LengthBias)
length_bias.__doc__ = """With probability |strength| per pair prefer the longer (strength > 0) or shorter output.

>>> from farm.annotators.noise import ConstantJudge
>>> [a.preference for a in length_bias(ConstantJudge(1.0), 1.0).annotate([Pair("i", "long one", "b")])]
[0.0]
"""
list_bias = _wrapper(_ListBias)
list_bias.__doc__ = """With probability |strength| per pair prefer the output with a list (strength > 0) when exactly
one output has one (see `contains_list`)."""


def swap(annotator: Annotator | None = None):
    """Judge the swapped pair and undo the swap. `swap()` returns a transform.

    >>> from farm.annotators.noise import ConstantJudge
    >>> a = swap(ConstantJudge(1.0)).annotate([Pair("i", "a", "b")])[0]
    >>> a.preference, a.pair.output_1
    (0.0, 'a')
    """
    return Swap if annotator is None else Swap(annotator)


def chain(annotator: Annotator, *transforms: Transform) -> Annotator:
    """Apply transforms in order, innermost first: the last transform acts last on every verdict.

    >>> from farm.annotators.noise import ConstantJudge
    >>> chain(ConstantJudge(1.0), position_bias(.1), flip(.25)).identity()
    'flip(strength=0.25)<position_bias(strength=0.1)<constant(p=1.0)>>'
    """
    for t in transforms:
        if not callable(t):
            raise TypeError(f"chain() takes transforms such as flip(.25), got {t!r}")
        annotator = t(annotator)
    return annotator


@dataclass
class ConstantJudge:
    """A judge that always answers `p` (a reference point for tests and docs, and a 'coin' judge with p=0.5)."""

    p: float = 0.5
    name: str = "constant"

    def identity(self) -> str:
        return f"constant(p={self.p!r})"

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        return [Annotation(pair=p, preference=self.p, annotator=self.name) for p in pairs]
