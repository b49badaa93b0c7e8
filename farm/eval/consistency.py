"""Both orders: ask each pair with its outputs in both positions, fold the two verdicts back into one, and measure
how consistent each judge is.

- `with_both_orders(pairs)`: every pair followed by its swapped copy (output_1 ↔ output_2, generators too).
- `fold_orders(annotations)`: one annotation per pair in its first-seen orientation, p = the mean of the
  verdict on it and 1 − the verdict on its swapped copy (invalid verdicts left out; invalid if both are). A
  leaderboard of folded annotations counts each pair once, so n and the SE stay honest.
- `consistency_table(annotations)`: per judge (the annotation's `annotator`):
  - `position_consistency`: % of (verdict, swapped verdict) combinations on pairs seen in both orders whose
    classes mirror each other (output_1 ↔ output_2, a tie stays a tie): 100 = the order never matters;
  - `p_prefer_first_both_orders`: on those pairs, the mean of 1 − p over both orders (0.5 = no position bias,
    whatever the outputs' quality, because each output is first once);
  - `self_consistency`: % of pairs of repeated verdicts on the *same* pair in the *same* order (several samples
    or seeds of one judge) that fall in the same class; NaN without repeats;
  - the counts behind them.
Pairs are matched by content (instruction, input and the two outputs), so any annotation file works, however
its pairs were made. Pools pick a member per pair: a member is measured on the pairs it saw in both orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from farm.types import Annotation, Pair

CONSISTENCY_COLUMNS = ["position_consistency", "p_prefer_first_both_orders", "n_pairs_both_orders",
                       "self_consistency", "n_repeated", "n_annotations"]


def with_both_orders(pairs: Iterable[Pair]) -> list[Pair]:
    """[p₁, p₁ swapped, p₂, p₂ swapped, …]; a pair whose two outputs are identical is asked once."""
    out = []
    for p in pairs:
        out.append(p)
        if p.output_1 != p.output_2:
            out.append(p.swapped())
    return out


def _canonical(instruction: str, inp: str, o1: str, o2: str) -> tuple[tuple[str, str, str, str], bool]:
    """(order-free key, True when (o1, o2) is the key's own order)."""
    return ((instruction, inp, o1, o2), True) if o1 <= o2 else ((instruction, inp, o2, o1), False)


def fold_orders(annotations: Sequence[Annotation]) -> list[Annotation]:
    """One annotation per pair (first-seen orientation), p = mean over both orders in that orientation."""
    groups: dict[tuple, list] = {}
    for a in annotations:
        key, forward = _canonical(a.pair.instruction, a.pair.input, a.pair.output_1, a.pair.output_2)
        g = groups.setdefault(key, [a, forward, []])
        if a.preference is not None:
            g[2].append(a.preference if forward == g[1] else 1.0 - a.preference)
    out = []
    for first, _, ps in groups.values():
        out.append(Annotation(first.pair, float(np.mean(ps)) if ps else None, first.annotator, raw=first.raw,
                              price=first.price, time=first.time,
                              meta={**first.meta, "n_orders_folded": len(ps)}))
    return out


def _class(p: np.ndarray) -> np.ndarray:
    return np.where(p < 0.5, 0, np.where(p > 0.5, 2, 1))


def consistency_table(annotations: Sequence[Annotation] | pd.DataFrame) -> pd.DataFrame:
    """Position consistency and self-consistency per judge (see the module docstring)."""
    if isinstance(annotations, pd.DataFrame):
        df = annotations
    else:
        df = pd.DataFrame({"annotator": [a.annotator for a in annotations],
                           "instruction": [a.pair.instruction for a in annotations],
                           "input": [a.pair.input for a in annotations],
                           "output_1": [a.pair.output_1 for a in annotations],
                           "output_2": [a.pair.output_2 for a in annotations],
                           "p_output_2": [np.nan if a.preference is None else a.preference for a in annotations]})
    rows = {}
    for judge, g in df.groupby(df["annotator"].fillna("").astype(str), sort=True):
        by_key: dict[tuple, tuple[list, list]] = {}
        for ins, inp, o1, o2, p in zip(g["instruction"], g["input"], g["output_1"], g["output_2"], g["p_output_2"]):
            if o1 == o2 or np.isnan(p):
                continue
            key, forward = _canonical(ins, inp, o1, o2)
            by_key.setdefault(key, ([], []))[0 if forward else 1].append(p)
        agree = first = 0.0
        n_both, combos, n_first = 0, 0, 0
        same, n_rep_pairs, n_repeated = 0, 0, 0
        for fwd, bwd in by_key.values():
            if fwd and bwd:
                n_both += 1
                cf, cb = _class(np.array(fwd)), _class(np.array(bwd))
                agree += float((cf[:, None] == 2 - cb[None, :]).sum())
                combos += len(fwd) * len(bwd)
                first += float(np.sum(1 - np.array(fwd)) + np.sum(1 - np.array(bwd)))  # 1 − p: first shown wins
                n_first += len(fwd) + len(bwd)
            for ps in (fwd, bwd):
                if len(ps) > 1:
                    c = _class(np.array(ps))
                    i, j = np.triu_indices(len(c), k=1)
                    same += int((c[i] == c[j]).sum())
                    n_rep_pairs += len(i)
                    n_repeated += 1
        rows[judge] = {"position_consistency": 100 * agree / combos if combos else np.nan,
                       "p_prefer_first_both_orders": first / n_first if n_first else np.nan,
                       "n_pairs_both_orders": n_both,
                       "self_consistency": 100 * same / n_rep_pairs if n_rep_pairs else np.nan,
                       "n_repeated": n_repeated, "n_annotations": len(g)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=CONSISTENCY_COLUMNS)
