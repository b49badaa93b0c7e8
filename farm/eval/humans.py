"""Human labels as people keep them: a CSV, TSV or XLSX sheet with one row per annotation (who labelled which
pair, and what they said), read into the one-row-per-pair table `farm.eval.agreement` scores.

    read_human_table("labels.xlsx", columns={"instruction": "prompt", "label": "verdict"}, vocabulary="ab5")

Columns (ours ← the first of theirs that exists; `columns` maps any of ours to a name of yours):
    instruction ← instruction, prompt, question, query        input ← input, context
    output_1 ← output_1, response_a, response_1, answer_a, output_a, completion_a
    output_2 ← output_2, response_b, response_2, answer_b, output_b, completion_b
    generator_1 ← generator_1, model_a, model_1               generator_2 ← generator_2, model_b, model_2
    label ← label, preference, winner, choice, verdict, rating   evaluator ← evaluator, annotator, worker, rater, judge
    idx ← idx, pair_id, id (optional: lets PandaLM-style judge files join on it)
Needed: instruction, output_1, output_2, label; evaluator when one person may label a pair twice.

Labels become p = P(output_2 better) through a vocabulary (`VOCABULARIES`, or a dict of your own):
- "ab5": a-is-better 0, a-is-slightly-better 0.25, tie / about-the-same / equal / both-bad 0.5,
  b-is-slightly-better 0.75, b-is-better 1 (spaces, underscores, case and "response"/"output" instead of the
  letter are all accepted: "Response A is better");
- "arena": model_a 0, model_b 1, tie / tie (bothbad) 0.5;
- "numeric": AlpacaEval/PandaLM codes: 1 = first, 2 = second, 0 or 1.5 = tie, values in [1, 2] linear;
- "auto" (default): "numeric" when every label is a number, else "ab5" and "arena" together.
An empty cell is a missing label (kept: the pair still counts where others labelled it); a label outside the
vocabulary is an error naming file, line and column. XLSX needs openpyxl (`pip install farm[xlsx]`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.types import from_alpaca_eval

ALIASES = {
    "instruction": ["instruction", "prompt", "question", "query"],
    "input": ["input", "context"],
    "output_1": ["output_1", "response_a", "response_1", "answer_a", "output_a", "completion_a", "response1"],
    "output_2": ["output_2", "response_b", "response_2", "answer_b", "output_b", "completion_b", "response2"],
    "generator_1": ["generator_1", "model_a", "model_1"],
    "generator_2": ["generator_2", "model_b", "model_2"],
    "label": ["label", "preference", "winner", "choice", "verdict", "rating"],
    "evaluator": ["evaluator", "annotator", "worker", "rater", "judge", "annotator_id", "worker_id"],
    "idx": ["idx", "pair_id", "id"],
}
REQUIRED = ("instruction", "output_1", "output_2", "label")

_AB5 = {"a-is-better": 0.0, "a-is-slightly-better": 0.25, "tie": 0.5, "about-the-same": 0.5, "equal": 0.5,
        "same": 0.5, "both-bad": 0.5, "both-good": 0.5, "b-is-slightly-better": 0.75, "b-is-better": 1.0,
        "a": 0.0, "b": 1.0, "a-better": 0.0, "b-better": 1.0}
_ARENA = {"model-a": 0.0, "model-b": 1.0, "tie": 0.5, "tie-(bothbad)": 0.5, "tie-bothbad": 0.5}
VOCABULARIES: dict[str, dict[str, float]] = {"ab5": _AB5, "arena": _ARENA}


def normalise_label(text: str) -> str:
    """Lower case, words joined by '-', 'response/output/model a' → 'a' (so 'Response A is better' →
    'a-is-better').

    >>> normalise_label("Response A is slightly better"), normalise_label("model_b"), normalise_label("TIE")
    ('a-is-slightly-better', 'model-b', 'tie')
    """
    t = re.sub(r"[\s_]+", "-", str(text).strip().lower())
    return re.sub(r"^(?:response|output|answer|assistant)-([ab12])\b", r"\1", t)


def label_to_p(value, vocabulary: str | Mapping[str, float]) -> float | None:
    """One label → P(output_2 better), None for an empty cell; ValueError for a label the vocabulary lacks."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    if isinstance(vocabulary, Mapping):
        key = normalise_label(value)
        table = {normalise_label(k): float(v) for k, v in vocabulary.items()}
        if key not in table:
            raise ValueError(f"label {value!r} is not in the given vocabulary {sorted(table)}")
        return table[key]
    if vocabulary == "numeric":
        return from_alpaca_eval(value if not isinstance(value, str) else value.strip())
    words = {**_AB5, **_ARENA} if vocabulary == "auto" else VOCABULARIES[vocabulary]
    key = normalise_label(value)
    if key not in words:
        raise ValueError(f"label {value!r} is not a known {vocabulary} label",)
    return words[key]


def _read_sheet(path: Path, sheet: str | int | None) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            try:
                import openpyxl  # noqa: F401
            except ImportError:
                raise FarmError("reading .xlsx needs openpyxl", file=path,
                                hint="pip install openpyxl (or farm[xlsx]); or save the sheet as CSV") from None
            return pd.read_excel(path, sheet_name=0 if sheet is None else sheet, dtype=object)
        sep = "\t" if suffix.startswith(".tsv") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, KeyError) as e:
        raise FarmError(f"cannot read the human-label table: {e}", file=path) from None


def read_human_table(path: str | os.PathLike, *, columns: Mapping[str, str] | None = None,
                     vocabulary: str | Mapping[str, float] = "auto", sheet: str | int | None = None,
                     long: bool = False) -> pd.DataFrame:
    """A CSV/TSV/XLSX of human labels (one row per annotation) → one row per pair with `human` = the list of
    p's (None = missing) and `evaluators` = who gave each, as `farm.eval.agreement.read_humans` returns.
    With `long=True`: one row per annotation instead (instruction … output_2, evaluator, label, p)."""
    path = Path(path)
    if not path.exists():
        raise FarmError("file not found", file=path)
    raw = _read_sheet(path, sheet)
    if isinstance(vocabulary, str) and vocabulary not in ("auto", "numeric", *VOCABULARIES):
        raise FarmError(f"unknown label vocabulary '{vocabulary}'",
                        hint=f"one of auto, numeric, {', '.join(VOCABULARIES)}, or a mapping label → p")
    lower = {str(c).strip().lower(): c for c in raw.columns}
    chosen: dict[str, str] = {}
    for ours, names in ALIASES.items():
        if columns and ours in columns:
            if columns[ours] not in raw.columns:
                raise FarmError(f"column '{columns[ours]}' (mapped to {ours}) is not in the sheet", file=path,
                                field=columns[ours], hint=f"columns: {list(raw.columns)}")
            chosen[ours] = columns[ours]
        else:
            hit = next((lower[n] for n in names if n in lower), None)
            if hit is not None:
                chosen[ours] = hit
    for ours in REQUIRED:
        if ours not in chosen:
            raise FarmError(f"no column for '{ours}'", file=path, field=ours,
                            hint=f"columns: {list(raw.columns)}; map one with columns={{'{ours}': 'your name'}} "
                                 f"(--human-columns {ours}=NAME)")
    df = pd.DataFrame({ours: raw[theirs] for ours, theirs in chosen.items()})
    for col in ("input", "generator_1", "generator_2", "evaluator"):
        if col not in df.columns:
            df[col] = ""
    for col in ("instruction", "input", "output_1", "output_2", "generator_1", "generator_2", "evaluator"):
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    labels = df["label"].tolist()
    vocab = vocabulary
    if vocabulary == "auto":
        filled = [v for v in labels if _filled(v)]
        vocab = "numeric" if filled and all(_is_number(v) for v in filled) else "auto"
    ps = []
    for i, v in enumerate(labels):
        try:
            ps.append(label_to_p(v, vocab))
        except ValueError as e:
            raise FarmError(str(e), file=path, line=i + 2, field=chosen["label"],
                            hint="pass vocabulary=... (--label-vocabulary) or a mapping (--label-map A=0,B=1,tie=0.5)"
                            ) from None
    df["p"] = ps
    if long:
        return df
    key = ["instruction", "input", "output_1", "output_2", "generator_1", "generator_2"]
    if "idx" in df.columns:
        key = ["idx", *key]  # identical outputs of two pairs stay two pairs
    out = (df.groupby(key, sort=False)
           .agg(human=("p", lambda s: [None if v is None or pd.isna(v) else float(v) for v in s]),
                evaluators=("evaluator", list))
           .reset_index())
    if "idx" not in out.columns:
        out.insert(0, "idx", range(len(out)))
    return out


def _filled(v) -> bool:
    return not (v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "")


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
