"""One annotation frame for every evaluator: files in, a DataFrame with one row per annotation out.

Every module of `farm.eval` that reads annotations goes through `to_frame` and the integer codes below (the
win rate, LC, Bradley–Terry, correlations, agreement); none of them imports another to get at these helpers.

Rows are named (the `generator_2` column = the model a row scores):
- `name_from="generator"` (default): the file's `generator_2`; a file without one is named after the file.
  When two files carry the same generator name, their rows are named after their files instead (AlpacaEval
  names rows after the results folder), so two models never merge silently.
- `name_from="file"`: every row after its file: `gpt4.json.gz` → "gpt4"; AlpacaEval's
  `results/<model>/<annotator>/annotations.json` → "<model>" (see `name_of_file`).
Two inputs that end with the same name are an error unless `merge=True` (then their rows add up, as when one
model was annotated in two batches).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.eval.stats import bootstrap_counts
from farm.types import Annotation, from_alpaca_eval

FRAME_COLUMNS = ["instruction", "input", "output_1", "output_2", "generator_1", "generator_2", "p_output_2"]
Source = pd.DataFrame | Sequence[Annotation] | str | os.PathLike | Sequence[str | os.PathLike]
NAME_FROM = ("generator", "file")


# ----- one frame, one row per annotation -----

def to_frame(source: Source, *, name_from: str = "generator", merge: bool = False) -> pd.DataFrame:
    """Annotations as a DataFrame with `FRAME_COLUMNS` (+ any other fields), p_output_2 = P(output_2 better)
    as float with NaN for invalid, and `preference_was_string` (the file wrote the number as a string, as
    AlpacaEval's files do: "2"; counted by `input_notes`).

    Accepts a path or list of paths (our files and AlpacaEval's), a list of `Annotation`, or a DataFrame holding
    `p_output_2` (our scale) or AlpacaEval's `preference` code. Row naming and `merge`: see the module docstring.
    """
    if name_from not in NAME_FROM:
        raise FarmError(f"unknown name_from '{name_from}'", hint=f"one of {list(NAME_FROM)}")
    if isinstance(source, pd.DataFrame):
        return _normalise(source.copy(), where="<DataFrame>")
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    items = list(source)
    if not items:
        raise FarmError("no annotations given")
    if all(isinstance(a, Annotation) for a in items):
        from farm.io import annotations_to_frame

        return _normalise(annotations_to_frame(items), where="<annotations>")
    if all(isinstance(a, (str, os.PathLike)) for a in items):
        return _normalise(_read_files(items, name_from, merge), where=str(items[0]))
    raise FarmError("expected annotation file paths, Annotation objects or a DataFrame",
                    hint=f"got a list of {type(items[0]).__name__}")


def _read_files(paths: Sequence[str | os.PathLike], name_from: str, merge: bool) -> pd.DataFrame:
    from farm.io import annotation_from_record, annotations_to_frame, read_records

    frames = []
    for path in paths:
        records = read_records(path)
        if not records:
            raise FarmError("no annotations in file", file=path)
        df = annotations_to_frame([annotation_from_record(r, path, i) for i, r in enumerate(records, 1)])
        df["preference_was_string"] = [isinstance(r.get("p_output_2", r.get("preference")), str) for r in records]
        df["_file_name"] = name_of_file(path, df["annotator"])
        if name_from == "file":
            df["generator_2"] = df["_file_name"]
        else:
            df["generator_2"] = df["generator_2"].replace("", df["_file_name"].iloc[0])
        frames.append(df)
    if name_from == "generator":  # a generator name in two files: name those files' rows after the files
        owners: dict[str, set[int]] = {}
        for i, df in enumerate(frames):
            for g in df["generator_2"].unique():
                owners.setdefault(g, set()).add(i)
        clash = {i for files in owners.values() if len(files) > 1 for i in files}
        if clash and not merge:
            for i in clash:
                df = frames[i]
                if df["generator_2"].nunique() == 1:
                    df["generator_2"] = df["_file_name"]
                else:  # a file of several models (farm evaluate's annotations.jsonl): keep them apart
                    df["generator_2"] = df["_file_name"] + "/" + df["generator_2"]
    names: dict[str, int] = {}
    for i, df in enumerate(frames):
        for g in df["generator_2"].unique():
            if g in names and not merge:
                raise FarmError(f"two inputs are both named '{g}'", file=paths[i],
                                hint=f"also {paths[names[g]]}; pass --merge (merge=True) if they are one model "
                                     "annotated in several files, or rename one file")
            names.setdefault(g, i)
    return pd.concat(frames, ignore_index=True).drop(columns="_file_name")


def file_stem(path: str | os.PathLike) -> str:
    """A file's name without .gz/.json/.jsonl/.csv/.tsv/.xlsx: "results/gpt-3.5-turbo.json.gz" → "gpt-3.5-turbo".

    >>> file_stem("results/gpt-3.5-turbo.json.gz"), file_stem("a.b.jsonl")
    ('gpt-3.5-turbo', 'a.b')
    """
    name = Path(path).name
    for suffix in (".gz", ".json", ".jsonl", ".csv", ".tsv", ".xlsx"):
        name = name.removesuffix(suffix)
    return name


def name_of_file(path: str | os.PathLike, annotators: Sequence[str] | pd.Series = ()) -> str:
    """The model a file stands for: its stem, or for a generic name (annotations.json, model_outputs.json) its
    folder, skipping a folder named after the annotator (AlpacaEval: results/<model>/<annotator>/...).

    >>> name_of_file("results/gpt4/alpaca_eval_gpt4/annotations.json", ["alpaca_eval_gpt4"])
    'gpt4'
    >>> name_of_file("runs/x/dpo/annotations.jsonl"), name_of_file("out/gpt4.json.gz")
    ('dpo', 'gpt4')
    """
    p = Path(path)
    stem = file_stem(p)
    if stem not in ("annotations", "model_outputs", "outputs", "leaderboard"):
        return stem
    folder = p.resolve().parent if p.parent.name in ("", ".") else p.parent
    if folder.name in set(map(str, annotators)) - {""} and folder.parent.name:
        folder = folder.parent
    return folder.name or stem


def _normalise(df: pd.DataFrame, where: str) -> pd.DataFrame:
    if "p_output_2" not in df.columns:
        if "preference" not in df.columns:
            raise FarmError("annotations need 'p_output_2' (P(output_2 better)) or AlpacaEval 'preference'",
                            file=where, field="preference")
        df["preference_was_string"] = df["preference"].map(lambda v: isinstance(v, str))
        df["p_output_2"] = _from_alpaca_eval_column(df["preference"], where)
    df["p_output_2"] = pd.to_numeric(df["p_output_2"], errors="coerce").astype(float)
    bad = df["p_output_2"].notna() & ~df["p_output_2"].between(0.0, 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise FarmError(f"preference must be in [0, 1], got {df['p_output_2'].iloc[i]}", file=where, line=i + 1,
                        field="p_output_2")
    for col in ("instruction", "output_2"):
        if col not in df.columns:
            raise FarmError("missing column", file=where, field=col)
    for col in ("input", "output_1", "generator_1", "generator_2"):
        if col not in df.columns:
            df[col] = ""
    for col in ("instruction", "input", "output_1", "output_2", "generator_1", "generator_2"):
        df[col] = df[col].fillna("").astype(str)
    if "preference_was_string" not in df.columns:
        df["preference_was_string"] = False
    return df


def _from_alpaca_eval_column(values: pd.Series, where: str) -> np.ndarray:
    """`farm.types.from_alpaca_eval` on a whole column: vectorised when every value is a plain number in
    AlpacaEval's range, else value by value (which names the bad one)."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(float)
    plain = values.isna().to_numpy() | ~np.isnan(v)
    if plain.all() and bool(np.all(np.isnan(v) | (v == 0) | ((v >= 1) & (v <= 2)))):
        return np.where(v == 0, 0.5, v - 1.0)
    try:
        return np.array([np.nan if (p := from_alpaca_eval(x)) is None else p for x in values.tolist()], float)
    except ValueError as e:
        raise FarmError(str(e), file=where, field="preference") from None


def input_notes(frame: pd.DataFrame) -> list[str]:
    """What a user should know about the input besides the table: preferences written as strings (accepted only
    because they were numbers) and invalid (None/NaN) preferences, per model."""
    notes = []
    if "preference_was_string" in frame.columns and frame["preference_was_string"].any():
        n = int(frame["preference_was_string"].sum())
        notes.append(f"{n} of {len(frame)} preferences were numbers written as strings (e.g. \"2\"); read as numbers")
    invalid = frame["p_output_2"].isna().groupby(frame["generator_2"]).sum()
    for model, n in invalid[invalid > 0].items():
        notes.append(f"{model}: {int(n)} invalid (None/unparseable) preference(s) left out of every figure")
    return notes


# ----- integer codes: every per-model / per-instruction sum is a bincount over these -----

KEY_SEP = "\x1f"  # ASCII unit separator; not NUL: pandas' python-backed strings (no pyarrow) drop a NUL


def key_strings(frame: pd.DataFrame) -> pd.Series:
    """One vectorised string per (instruction, input)."""
    return frame["instruction"] + KEY_SEP + frame["input"]


def split_key(key: str) -> tuple[str, str]:
    instruction, inp = key.split(KEY_SEP, 1)
    return instruction, inp


def codes(values: pd.Series, universe: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Index of each value in `universe` (sorted uniques when None); -1 where absent."""
    if universe is None:
        c, uniques = pd.factorize(values, sort=True)
        return c, [str(u) for u in uniques]
    return pd.Index(list(universe)).get_indexer(values), list(universe)


# ----- the model × instruction matrix every resampling uses -----

@dataclass
class PreferenceMatrix:
    """Per (model, instruction) sums and counts of valid p; instructions sorted so resamples do not depend on
    file order. Duplicated annotations of one pair (several judges, several samples) add up in S and C."""

    models: list[str]
    keys: list[tuple[str, str]]  # (instruction, input)
    S: np.ndarray  # (M, N) sum of p
    C: np.ndarray  # (M, N) number of valid p

    @classmethod
    def from_frame(cls, df: pd.DataFrame, models: Sequence[str] | None = None,
                   keys: Sequence[tuple[str, str]] | None = None) -> PreferenceMatrix:
        mi, models = codes(df["generator_2"], models)
        ki, keys_s = codes(key_strings(df), None if keys is None else [KEY_SEP.join(k) for k in keys])
        p = df["p_output_2"].to_numpy(float)
        ok = (mi >= 0) & (ki >= 0) & ~np.isnan(p)
        flat = mi[ok] * len(keys_s) + ki[ok]
        size = len(models) * len(keys_s)
        S = np.bincount(flat, weights=p[ok], minlength=size).reshape(len(models), -1)
        C = np.bincount(flat, minlength=size).astype(float).reshape(len(models), -1)
        keys = list(keys) if keys is not None else [split_key(k) for k in keys_s]
        return cls(models, keys, S, C)

    def bootstrap_win_rates(self, n_boot: int, seed: int) -> np.ndarray:
        """(B, M) win rates (×100) under `n_boot` resamples of the instructions, shared by all models."""
        w = bootstrap_counts(len(self.keys), n_boot, seed)  # (B, N)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ self.S.T) / (w @ self.C.T) * 100  # (B, M)
