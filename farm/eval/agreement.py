"""Judge meta-evaluation against human labels, like AlpacaEval's evaluator leaderboard (`analyze.py`).

Inputs: a human table (one row per pair, `human` = the list of each human's p = P(output_2 better), None for a
missing label) and, per judge, a list of verdicts per pair (several when the judge was sampled several times;
None = unparseable). A verdict p falls in a *class*: output_1 (p < 0.5), tie (p == 0.5), output_2 (p > 0.5).

The *human majority* of a pair is the most frequent class among its humans. When several classes tie for most
frequent, `tie_rule` decides: "expected" (default): the majority is each of them with equal probability, and
every score below is the expectation over that choice (AlpacaEval draws one at random with a fixed seed; the
expectation is the same number without the luck); "skip": the pair (or, leave-one-out, the entry) is left out,
as MT-bench and most papers do.

Figures (one row per judge, plus `humans`), all means over (pair, verdict) entries:
- `agreement`: % of verdicts whose class equals the human majority, ties being a class of their own;
  an unparseable verdict counts as wrong. `n_agree` = the number of such agreeing verdicts.
- `agreement_no_ties`: the same on verdicts that are parsed and not a tie, on pairs whose human majority is a
  single non-tie class (MT-bench's "without ties").
- `agreement_soft`: AlpacaEval's "Human agreement" (absolute scoring rule): 100 × mean(1 − |p − majority|),
  majority in {0, 0.5, 1}: a tie against a side scores ½, a weighted judge's p counts as it is; unparseable
  verdicts are left out, as AlpacaEval drops them.
- `agreement_loo`: `agreement` against the majority of all humans but one, averaged over which human is left
  out: the same number of voters as the human leave-one-out row, so the two compare fairly.
- humans row: each human against the majority of the others (leave-one-out), in each of the three flavours.
- `bias` (AlpacaEval): 100 × (1 − soft agreement between the judge's own majority over its verdicts on a pair
  and the human majority). With one verdict per pair it is 100 − `agreement_soft` (an over-estimate). Humans: 0.
- `variance` (AlpacaEval): 100 × (1 − soft agreement of each verdict with the judge's majority of its *other*
  verdicts on the same pair); needs ≥ 2 parsed verdicts per pair (NaN otherwise). Humans: 100 − soft LOO.
- `p_prefer_longer`: among parsed non-tie verdicts on pairs whose outputs differ by more than 30 characters,
  the share that prefer the longer output (AlpacaEval's threshold; they use the first verdict per pair only).
- `p_prefer_first`: mean over parsed verdicts of 1 − p (AlpacaEval's "Proba. prefer 1", ties count ½).
- `p_prefer_lists`: among parsed non-tie verdicts on pairs where exactly one output contains a list
  (`farm.annotators.noise.contains_list`: a line starting with a bullet or "1."), the share preferring it.
  AlpacaEval's list detector matches any hyphen or "x. Word", so its figures are not comparable.
- `n_pairs`, `n_parsed`, `n_unparsed`; `agreement_ci_low/high`: percentile bootstrap over pairs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.eval.frames import file_stem
from farm.eval.stats import bootstrap_counts, percentile_interval
from farm.types import check_preference, from_alpaca_eval

KEY = ["instruction", "input", "output_1", "output_2"]
VALUES = np.array([0.0, 0.5, 1.0])  # the p of each class: output_1, tie, output_2
LONGER_BY = 30  # characters, AlpacaEval's `significant_delta_length`


# ----- maths on (pairs, raters) arrays; NaN = no label -----

def classes(p: np.ndarray) -> np.ndarray:
    """0 (output_1 better), 1 (tie), 2 (output_2 better); -1 where p is NaN.

    >>> classes(np.array([0.0, 0.5, 0.9, np.nan])).tolist()
    [0, 1, 2, -1]
    """
    c = np.where(p < 0.5, 0, np.where(p > 0.5, 2, 1))
    return np.where(np.isnan(p), -1, c)


def class_counts(p: np.ndarray) -> np.ndarray:
    """(n, K) labels → (n, 3) how many raters chose each class."""
    c = classes(p)
    return (c[..., None] == np.arange(3)).sum(axis=-2).astype(float)


def mode_distribution(counts: np.ndarray) -> np.ndarray:
    """(…, 3) class counts → (…, 3) probability of each class being the majority (uniform over tied modes;
    all zero where there is no label).

    >>> mode_distribution(np.array([[2., 1, 0], [1, 0, 1], [0, 0, 0]])).tolist()
    [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]
    """
    top = counts.max(axis=-1, keepdims=True)
    is_mode = (counts == top) & (top > 0)
    n = is_mode.sum(axis=-1, keepdims=True)
    return np.divide(is_mode, n, out=np.zeros_like(counts), where=n > 0)


TIE_RULES = ("expected", "skip")


def majority(counts: np.ndarray, tie_rule: str = "expected") -> np.ndarray:
    """`mode_distribution`, with tied majorities zeroed (no majority) under tie_rule="skip".

    >>> majority(np.array([[1., 0, 1], [2, 1, 0]]), "skip").tolist()
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    if tie_rule not in TIE_RULES:
        raise FarmError(f"unknown tie rule '{tie_rule}'", hint=f"one of {TIE_RULES}")
    dist = mode_distribution(counts)
    return dist if tie_rule == "expected" else np.where(dist.max(-1, keepdims=True) == 1.0, dist, 0.0)


def hard_score(p: np.ndarray, majority: np.ndarray) -> np.ndarray:
    """P(class of p == majority) for (…) verdicts against (…, 3) majorities; NaN verdict → 0 (wrong)."""
    onehot = classes(p)[..., None] == np.arange(3)  # all False for NaN
    return (majority * onehot).sum(-1)


def soft_score(p: np.ndarray, majority: np.ndarray) -> np.ndarray:
    """E[1 − |p − majority|] (AlpacaEval's absolute scoring rule); NaN where p is NaN."""
    return (majority * (1.0 - np.abs(p[..., None] - VALUES))).sum(-1) + np.where(np.isnan(p), np.nan, 0.0)


def _mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float(x[mask].mean()) if mask.any() else float("nan")


# ----- the tables -----

def human_arrays(humans: pd.DataFrame) -> np.ndarray:
    """The `human` lists as an (n, K) float array, NaN where a pair has fewer labels or a label is missing."""
    k = max((len(h) for h in humans["human"]), default=0)
    out = np.full((len(humans), k), np.nan)
    for i, labels in enumerate(humans["human"]):
        out[i, :len(labels)] = [np.nan if v is None else v for v in labels]
    return out


def judge_arrays(humans: pd.DataFrame, verdicts: Sequence[Sequence[float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair verdict lists → (n, K) p with NaN for unparseable, and (n, K) mask of verdicts that exist."""
    k = max((len(v) for v in verdicts), default=0)
    p = np.full((len(humans), k), np.nan)
    present = np.zeros((len(humans), k), dtype=bool)
    for i, vs in enumerate(verdicts):
        present[i, :len(vs)] = True
        p[i, :len(vs)] = [np.nan if v is None else v for v in vs]
    return p, present


def _bias_preference_rows(humans: pd.DataFrame, p: np.ndarray, present: np.ndarray) -> dict[str, float]:
    """P(prefer longer / first / lists) over all parsed verdicts (rows = pairs, columns = raters)."""
    from farm.annotators.noise import contains_list

    len1 = humans["output_1"].str.len().to_numpy()[:, None]
    len2 = humans["output_2"].str.len().to_numpy()[:, None]
    parsed = present & ~np.isnan(p)
    decided = parsed & (p != 0.5)
    chose_2 = p > 0.5
    longer = decided & (np.abs(len1 - len2) > LONGER_BY)
    list1 = np.array([contains_list(t) for t in humans["output_1"]])[:, None]
    list2 = np.array([contains_list(t) for t in humans["output_2"]])[:, None]
    one_list = decided & (list1 != list2)
    return {
        "p_prefer_longer": _mean(chose_2 == (len2 > len1), longer),
        "p_prefer_first": _mean(1.0 - np.nan_to_num(p), parsed),
        "p_prefer_lists": _mean(chose_2 == list2, one_list),
    }


def human_row(humans: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              tie_rule: str = "expected") -> dict[str, float]:
    """Leave-one-out figures of the humans: each label against the majority of the other labels of its pair.
    A pair with a single label has no others: with only such pairs every figure is NaN (never 100%)."""
    h = human_arrays(humans)
    labelled = ~np.isnan(h)
    counts = class_counts(h)  # (n, 3)
    own = (classes(h)[..., None] == np.arange(3)).astype(float)  # (n, K, 3)
    others = majority(counts[:, None, :] - own, tie_rule)  # (n, K, 3) majority of the others
    has_others = labelled & (others.sum(-1) > 0)
    hard = hard_score(h, others)
    soft = soft_score(h, others)
    single = others.max(-1) == 1.0  # the others' majority is one class
    no_ties = has_others & (h != 0.5) & single & (others[..., 1] == 0)
    lo, hi = _pair_interval(np.where(has_others, hard, 0).sum(1), has_others.sum(1), n_boot, seed, level)
    row = {
        "agreement": 100 * _mean(hard, has_others), "agreement_ci_low": lo, "agreement_ci_high": hi,
        "agreement_no_ties": 100 * _mean(hard, no_ties), "agreement_soft": 100 * _mean(soft, has_others),
        "agreement_loo": 100 * _mean(hard, has_others), "n_agree": float(hard[has_others].sum()),
        "bias": 0.0, "variance": 100 - 100 * _mean(soft, has_others),
        "n_pairs": int(has_others.any(1).sum()), "n_parsed": int(labelled.sum()), "n_unparsed": 0,
    }
    row.update(_bias_preference_rows(humans, h, labelled))
    return row


def judge_row(humans: pd.DataFrame, verdicts: Sequence[Sequence[float | None]], n_boot: int = 1000,
              seed: int = 0, level: float = 0.95, tie_rule: str = "expected") -> dict[str, float]:
    """A judge's figures against the humans of the same pairs (`verdicts[i]` = the judge's list for row i)."""
    h = human_arrays(humans)
    p, present = judge_arrays(humans, verdicts)
    counts = class_counts(h)
    major = majority(counts, tie_rule)  # (n, 3)
    use = present & (major.sum(-1) > 0)[:, None]  # verdicts on pairs with a human majority
    parsed = use & ~np.isnan(p)
    hard = hard_score(p, major[:, None, :])
    soft = soft_score(p, major[:, None, :])
    single = major.max(-1) == 1.0
    no_ties = parsed & (p != 0.5) & (single & (major[:, 1] == 0))[:, None]

    # against the majority of all humans but one, averaged over which one is left out
    labelled = ~np.isnan(h)
    own = (classes(h)[..., None] == np.arange(3)).astype(float)  # (n, Kh, 3)
    loo = majority(counts[:, None, :] - own, tie_rule)  # (n, Kh, 3)
    ok = labelled & (loo.sum(-1) > 0)
    loo_score = np.where(ok[:, None, :], hard_score(p[:, :, None], loo[:, None, :, :]), 0).sum(-1)
    loo_score = loo_score / np.maximum(ok.sum(-1), 1)[:, None]
    use_loo = use & ok.any(-1)[:, None]

    # AlpacaEval's bias: the judge's own majority (over its parsed verdicts) against the human majority
    judge_major = mode_distribution(class_counts(np.where(parsed, p, np.nan)))  # (n, 3)
    has_major = (judge_major.sum(-1) > 0) & (major.sum(-1) > 0)
    bias_score = (judge_major[:, :, None] * major[:, None, :]
                  * (1 - np.abs(VALUES[:, None] - VALUES[None, :]))).sum((-1, -2))
    # AlpacaEval's variance: each verdict against the majority of the judge's other verdicts on the pair
    jown = (classes(p)[..., None] == np.arange(3)) & parsed[..., None]
    others = mode_distribution(class_counts(np.where(parsed, p, np.nan))[:, None, :] - jown)  # (n, Kj, 3)
    var_use = parsed & (others.sum(-1) > 0)
    var_score = soft_score(p, others)

    lo, hi = _pair_interval(np.where(use, hard, 0).sum(1), use.sum(1), n_boot, seed, level)
    row = {
        "agreement": 100 * _mean(hard, use), "agreement_ci_low": lo, "agreement_ci_high": hi,
        "agreement_no_ties": 100 * _mean(hard, no_ties), "agreement_soft": 100 * _mean(soft, parsed),
        "agreement_loo": 100 * _mean(loo_score, use_loo), "n_agree": float(hard[use].sum()),
        "bias": 100 - 100 * _mean(bias_score, has_major), "variance": 100 - 100 * _mean(var_score, var_use),
        "n_pairs": int(use.any(1).sum()), "n_parsed": int(parsed.sum()), "n_unparsed": int((use & ~parsed).sum()),
    }
    row.update(_bias_preference_rows(humans, p, use))
    return row


def _pair_interval(sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int,
                   level: float) -> tuple[float, float]:
    """Percentile bootstrap over pairs of Σ sums / Σ counts (the estimate's own weighting: every verdict counts
    once), on the pairs with at least one counted verdict."""
    keep = counts > 0
    x, c = sums[keep], counts[keep].astype(float)
    if n_boot <= 0 or len(x) == 0:
        return float("nan"), float("nan")
    w = bootstrap_counts(len(x), n_boot, seed)
    lo, hi = percentile_interval((w @ x) / (w @ c) * 100, level)
    return float(lo), float(hi)


COLUMNS = ["agreement", "agreement_ci_low", "agreement_ci_high", "agreement_no_ties", "agreement_soft",
           "agreement_loo", "bias", "variance", "p_prefer_longer", "p_prefer_first", "p_prefer_lists",
           "n_agree", "n_pairs", "n_parsed", "n_unparsed"]


def agreement_table(humans: pd.DataFrame, judges: dict[str, Sequence[Sequence[float | None]]], *,
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95, tie_rule: str = "expected"
                    ) -> pd.DataFrame:
    """The evaluator leaderboard: a `humans` row then one row per judge (dict name → per-pair verdict lists,
    aligned with the rows of `humans`); `judges` may be empty (humans only)."""
    rows = {"humans": human_row(humans, n_boot, seed, level, tie_rule)}
    for name, verdicts in judges.items():
        if len(verdicts) != len(humans):
            raise ValueError(f"judge '{name}': {len(verdicts)} verdict lists for {len(humans)} pairs")
        rows[name] = judge_row(humans, verdicts, n_boot, seed, level, tie_rule)
    return pd.DataFrame.from_dict(rows, orient="index")[COLUMNS]


# ----- file adapters (the only place other codes appear) -----

def read_humans(path: str | os.PathLike, *, columns: dict[str, str] | None = None,
                vocabulary: str | dict[str, float] = "auto") -> pd.DataFrame:
    """Human labels, one row per pair with `human` = list of P(output_2 better) (None = missing).

    Formats: a CSV/TSV/XLSX sheet with one row per annotation (`farm.eval.humans.read_human_table`, with the
    column mapping and label vocabulary); else detected from the fields: ours (`human: [p, ...]` per pair);
    PandaLM's test set (`annotator1..3`: 0 tie, 1, 2; `response1/2`); AlpacaEval cross-annotations (one record
    per (pair, human) with `preference` 1/2 and 1.5 or 0 as a draw), grouped by pair.
    """
    from farm.io import get_field, read_pandalm_humans, read_records

    if "".join(Path(path).suffixes).lower().removesuffix(".gz").endswith((".csv", ".tsv", ".xlsx", ".xlsm")):
        from farm.eval.humans import read_human_table

        return read_human_table(path, columns=columns, vocabulary=vocabulary)

    records = read_records(path)
    if not records:
        raise FarmError("no records", file=path)
    first = records[0]
    if "annotator1" in first:
        df = pd.DataFrame(read_pandalm_humans(path))
    elif "human" in first:
        rows = []
        for i, r in enumerate(records, 1):
            labels = get_field(r, "human", path, i, list)
            try:
                labels = [check_preference(v) for v in labels]
            except (TypeError, ValueError) as e:
                raise FarmError(f"human labels must be P(output_2 better) in [0, 1] or null: {e}", file=path,
                                line=i, field="human") from None
            rows.append({"idx": r.get("idx", r.get("id", i - 1)), **_pair_fields(r, path, i), "human": labels})
        df = pd.DataFrame(rows)
    elif "preference" in first:
        rows = []
        for i, r in enumerate(records, 1):
            try:
                p = from_alpaca_eval(r.get("preference"))
            except ValueError as e:
                raise FarmError(str(e), file=path, line=i, field="preference") from None
            rows.append({**_pair_fields(r, path, i), "p": p})
        flat = pd.DataFrame(rows)
        df = (flat.groupby(KEY, sort=False, dropna=False)
              .agg(generator_1=("generator_1", "first"), generator_2=("generator_2", "first"),
                   human=("p", lambda s: [None if pd.isna(v) else float(v) for v in s]))
              .reset_index())
        df.insert(0, "idx", range(len(df)))
    else:
        raise FarmError("unknown human-label format", file=path, line=1,
                        hint="expected 'human' (list of P(output_2 better)), PandaLM 'annotator1..3', or "
                             "AlpacaEval cross-annotations with 'preference'")
    # identical outputs of different models are different rows (PandaLM has 170 such), so no duplicate check
    return df.reset_index(drop=True)


def _pair_fields(r: dict, path, line: int) -> dict[str, str]:
    from farm.io import get_field

    return {"instruction": get_field(r, "instruction", path, line), "input": get_field(r, "input", path, line,
                                                                                     default=""),
            "output_1": get_field(r, "output_1", path, line), "output_2": get_field(r, "output_2", path, line),
            "generator_1": get_field(r, "generator_1", path, line, default=""),
            "generator_2": get_field(r, "generator_2", path, line, default="")}


def read_judge(path: str | os.PathLike, humans: pd.DataFrame) -> tuple[str, list[list[float | None]]]:
    """A judge's verdicts aligned with the rows of `humans`: (name, per-pair lists; [] where not judged).

    Formats: PandaLM judge files (`gpt_result` / `pandalm_result` / `result`, joined on `idx`), or any
    annotation file `farm.io.read_annotations` reads (ours or AlpacaEval's; several records for one pair =
    several verdicts), joined on instruction + input + output_1 + output_2.
    """
    from farm.io import read_annotations, read_records

    records = read_records(path)
    if not records:
        raise FarmError("no records", file=path)
    name = file_stem(path)
    verdicts: list[list[float | None]] = [[] for _ in range(len(humans))]
    result_field = next((f for f in ("gpt_result", "pandalm_result", "result") if f in records[0]), None)
    if result_field is not None and "idx" in records[0]:
        # '1', '2', 'Tie'/'0' → p; anything else ('garbage') → None
        from farm.annotators.replay import convert

        row_of = {str(v): i for i, v in enumerate(humans["idx"])}
        for line, r in enumerate(records, 1):
            i = row_of.get(str(r.get("idx")))
            if i is None:
                raise FarmError(f"idx {r.get('idx')!r} is not in the human file", file=path, line=line, field="idx")
            verdicts[i].append(convert(r.get(result_field), "pandalm"))
        return name, verdicts
    # join on content, and on the generators when the annotation names them; identical content shown to the
    # judge gets the same verdict whichever rows it stands for
    rows_of: dict[tuple, list[int]] = {}
    for i, r in enumerate(humans[[*KEY, "generator_1", "generator_2"]].itertuples(index=False)):
        rows_of.setdefault(tuple(r[:4]), []).append(i)
        rows_of.setdefault(tuple(r), []).append(i)
    anns = read_annotations(path)
    names = {a.annotator for a in anns} - {""}
    if len(names) == 1:
        name = names.pop()
    matched = 0
    for a in anns:
        q = a.pair
        for swapped, key in ((False, (q.instruction, q.input, q.output_1, q.output_2, q.generator_1, q.generator_2)),
                             (True, (q.instruction, q.input, q.output_2, q.output_1, q.generator_2, q.generator_1))):
            if not (q.generator_1 or q.generator_2):
                key = key[:4]
            hits = rows_of.get(key, [])
            for i in hits:  # a verdict on the swapped pair (asked in both orders) counts for the pair, flipped
                verdicts[i].append(a.preference if not swapped or a.preference is None else 1.0 - a.preference)
                matched += 1
            if hits:
                break
    if matched == 0:
        raise FarmError("no annotation matches a pair of the human file (joined on instruction, input, output_1, "
                        "output_2 in that order)", file=path)
    return name, verdicts


def evaluate_judges(human_path: str | os.PathLike, judge_paths: Sequence[str | os.PathLike] = (), *,
                    n_boot: int = 1000, seed: int = 0, tie_rule: str = "expected",
                    columns: dict[str, str] | None = None, vocabulary: str | dict[str, float] = "auto"
                    ) -> pd.DataFrame:
    """Read a human file and judge files (none: the humans row alone) and return `agreement_table`, with each
    judge's position consistency and self-consistency (`farm.eval.consistency`) where its file holds
    annotations."""
    humans = read_humans(human_path, columns=columns, vocabulary=vocabulary)
    judges, consistency = {}, {}
    for path in judge_paths:
        name, verdicts = read_judge(path, humans)
        if name in judges:
            name = file_stem(path)
        judges[name] = verdicts
        consistency[name] = _file_consistency(path)
    table = agreement_table(humans, judges, n_boot=n_boot, seed=seed, tie_rule=tie_rule)
    cols = ["position_consistency", "self_consistency", "n_pairs_both_orders"]
    for c in cols:
        table[c] = np.nan
    for name, cons in consistency.items():
        if cons is not None:
            for c in cols:
                table.loc[name, c] = cons[c]
    table.attrs["tie_rule"] = tie_rule
    return table


def _file_consistency(path: str | os.PathLike) -> dict | None:
    """Pooled consistency of every annotation in a judge file (None for a PandaLM verdict file, which has no
    outputs to match orders by)."""
    from farm.eval.consistency import consistency_table
    from farm.io import read_annotations

    try:
        anns = read_annotations(path)
    except FarmError:
        return None
    for a in anns:
        a.annotator = "all"  # pooled over the file's members: one row
    return consistency_table(anns).iloc[0].to_dict() if anns else None
