"""The few shared shapes every part of farm speaks (one definition each).

- `Pair`: an instruction (+ optional input) with two outputs to compare.
- A *preference* is one float p = P(output_2 > output_1) in [0, 1] (0.5 = tie), or None when the judge's
  answer could not be parsed (the raw text is kept on the `Annotation`). File formats with other codes
  (AlpacaEval 1/2 with 0 or 1.5 as a draw, PandaLM 0/1/2) are converted at the edge with the functions below.
- `Annotation`: one judge's verdict on one pair, with its cost: `price` (what the verdict cost when it was made)
  and `price_spent` (what this run paid: 0 for a cached or duplicate pair; the one to sum).
- `Rollout`: the batch every RL method consumes (tensors; torch is imported lazily).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Pair:
    """Two outputs for one instruction. `output_1` is the baseline/first shown, `output_2` the other."""

    instruction: str
    output_1: str
    output_2: str
    input: str = ""
    generator_1: str = ""
    generator_2: str = ""
    id: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def key(self) -> str:
        """Content hash of what a judge sees (instruction, input, both outputs in order).

        >>> Pair("i", "a", "b").key() == Pair("i", "a", "b", generator_1="x").key()
        True
        >>> Pair("i", "a", "b").key() == Pair("i", "b", "a").key()
        False
        """
        blob = json.dumps([self.instruction, self.input, self.output_1, self.output_2], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def swapped(self) -> Pair:
        return replace(
            self, output_1=self.output_2, output_2=self.output_1,
            generator_1=self.generator_2, generator_2=self.generator_1,
        )

    def to_record(self) -> dict[str, Any]:
        rec = {k: v for k, v in asdict(self).items() if k != "meta"}
        if self.meta:
            rec["meta"] = self.meta
        return rec


def pair_rng(seed: int, pair: Pair, salt: str = "") -> np.random.Generator:
    """A generator that depends on the seed, the whole pair and a salt (e.g. the annotator's name).

    The same pair gets the same draws whatever batch it arrives in, so results do not depend on batching,
    ordering or resumption.
    """
    h = hashlib.sha256(f"{seed}\x00{salt}\x00{pair.key()}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def stable_seed(*parts: object) -> int:
    """A 63-bit integer seed from any printable parts (stable across processes, unlike hash())."""
    h = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ----- preference conversions (the only place other codes appear) -----

def check_preference(p: float | None) -> float | None:
    if p is None:
        return None
    p = float(p)
    if math.isnan(p):
        return None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"preference must be in [0, 1] (P(output_2 better)), got {p}")
    return p


def from_alpaca_eval(value: Any) -> float | None:
    """AlpacaEval `preference` → P(output_2 better).

    1 = first better, 2 = second better, 0 or 1.5 = draw, a float in [1, 2] (weighted judges) is
    linear; may arrive as a string; None/NaN/'' = missing.

    >>> [from_alpaca_eval(v) for v in (1, 2, 1.5, 0, "2.0", "1.75", None)]
    [0.0, 1.0, 0.5, 0.5, 1.0, 0.75, None]
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() in {"nan", "none", "null"}:
            return None
        value = float(value)  # ValueError for garbage: callers wrap it with file/line/field
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # also lists/dicts: not a TypeError
        raise ValueError(f"preference must be a number, got {value!r:.60}")
    v = float(value)
    if math.isnan(v):
        return None
    if v == 0:
        return 0.5
    if not 1.0 <= v <= 2.0:
        raise ValueError(f"AlpacaEval preference must be 0 (draw) or in [1, 2], got {value!r}")
    return v - 1.0


def to_alpaca_eval(p: float | None) -> float | None:
    """P(output_2 better) → AlpacaEval `preference` (1 = first, 2 = second, 1.5 = draw).

    >>> [to_alpaca_eval(p) for p in (0.0, 1.0, 0.5, None)]
    [1.0, 2.0, 1.5, None]
    """
    return None if p is None else 1.0 + float(p)


def from_pandalm(value: Any) -> float | None:
    """PandaLM label (0 = tie, 1 = response1 better, 2 = response2 better) → P(output_2 better).

    >>> [from_pandalm(v) for v in (0, 1, 2, "2")]
    [0.5, 0.0, 1.0, 1.0]
    """
    if value is None or isinstance(value, bool):
        raise ValueError(f"PandaLM label must be 0, 1 or 2, got {value!r}")
    try:
        v = int(str(value).strip())
    except ValueError:
        raise ValueError(f"PandaLM label must be 0, 1 or 2, got {value!r}") from None
    if v not in (0, 1, 2):
        raise ValueError(f"PandaLM label must be 0, 1 or 2, got {value!r}")
    return {0: 0.5, 1: 0.0, 2: 1.0}[v]


@dataclass
class Annotation:
    """One verdict on one pair. `preference` = P(output_2 better) in [0, 1], or None if invalid."""

    pair: Pair
    preference: float | None
    annotator: str
    raw: str = ""
    price: float = 0.0  # dollars the verdict cost when it was made (kept on a cache hit)
    time: float = 0.0  # seconds
    meta: dict = field(default_factory=dict)
    price_spent: float = 0.0  # dollars *this* run paid for it: 0 on a cache hit or a duplicate pair; sum this

    def to_record(self) -> dict[str, Any]:
        """Flat JSON record. Our files carry `p_output_2` (never AlpacaEval's 1/2 codes) plus
        `preference` in AlpacaEval's code so AlpacaEval tools can read them too."""
        rec = self.pair.to_record()
        rec.update(
            p_output_2=self.preference,
            preference=to_alpaca_eval(self.preference),
            annotator=self.annotator,
            raw_completion=self.raw,
            price_per_example=self.price,
            price_spent=self.price_spent,
            time_per_example=self.time,
        )
        if self.meta:
            rec["annotation_meta"] = self.meta
        return rec


@runtime_checkable
class Annotator(Protocol):
    """Pairs in, annotations out (one per pair, same order).

    Judges (LLM backends, replay, synthetic) and wrappers (flip noise, position/length bias, swap) all satisfy
    this; a pool is an annotator that picks one member per pair. Randomness comes only from `seed` combined with
    each pair's content (`pair_rng`), so a pair's verdict does not depend on the batch it came in.
    """

    name: str

    def identity(self) -> str:
        """A stable string that changes whenever the verdicts could change (config, prompt, model)."""
        ...

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]: ...


@dataclass
class Rollout:
    """What every RL method consumes. Shapes: B rollouts, P prompt tokens (left-padded), R response tokens.

    response_mask is 1 on real response tokens *including* the EOS token (EOS is an action) and 0 on the
    padding after it. `scores` is the sequence-level reward, placed on the last real token by the methods.
    """

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R) right-padded
    response_mask: torch.Tensor  # (B, R)
    logprobs: torch.Tensor | None = None  # (B, R) behaviour policy, fp32
    ref_logprobs: torch.Tensor | None = None  # (B, R) reference policy, fp32
    scores: torch.Tensor | None = None  # (B,)
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])
