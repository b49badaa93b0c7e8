"""Win rates and leaderboards with AlpacaEval's exact definitions, plus bootstrap intervals over instructions.

A leaderboard is a pandas DataFrame indexed by model (`generator_2`), one row per model, with AlpacaEval's
columns (as in `alpaca_eval/metrics/helpers.py`, `describe_head2head`):

- `win_rate` = 100 × mean of p over valid annotations, p = P(model better than the baseline) ∈ [0, 1],
  a draw counting 0.5 and a weighted judge's p counting as it is.
- `standard_error` = 100 × sample std of p (ddof 1) / √n_total.
- `n_wins` = #(p > 0.5), `n_wins_base` = #(p < 0.5), `n_draws` = #(p == 0.5), exactly.
- `n_total` = number of valid annotations (p not None/NaN); invalid ones are excluded from every figure.
- `discrete_win_rate` = the same win rate after rounding each p to 0, 0.5 (only an exact 0.5) or 1.
- `avg_length` = int(mean length in characters of the model's outputs), one output per (instruction, input),
  truncated to an int as AlpacaEval writes it.

Our additions: `n_invalid`, `win_rate_ci_low`/`win_rate_ci_high` (percentile bootstrap over instructions,
resampled jointly for all models), and with `lc=True` the length-controlled win rate of `farm.eval.lc`.

Input is anything `to_frame` takes: annotation files (ours with `p_output_2`, or AlpacaEval
`annotations.json[.gz]`: output_1 = baseline, output_2 = model), `Annotation` objects, or a DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.eval.stats import bootstrap_counts, percentile_interval
from farm.types import Annotation, from_alpaca_eval

FRAME_COLUMNS = ["instruction", "input", "output_1", "output_2", "generator_1", "generator_2", "p_output_2"]
LEADERBOARD_COLUMNS = ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
                       "discrete_win_rate", "avg_length", "n_invalid", "win_rate_ci_low", "win_rate_ci_high"]

Source = pd.DataFrame | Sequence[Annotation] | str | os.PathLike | Sequence[str | os.PathLike]


# ----- one frame, one row per annotation -----

def to_frame(source: Source) -> pd.DataFrame:
    """Annotations as a DataFrame with `FRAME_COLUMNS` (+ any other fields), p_output_2 = P(output_2 better)
    as float with NaN for invalid.

    Accepts a path or list of paths (read with `farm.io.read_annotations`, so our files and AlpacaEval's), a
    list of `Annotation`, or a DataFrame holding `p_output_2` (our scale) or AlpacaEval's `preference` code.
    A missing `generator_2` is filled with the file's stem, so one file = one model works for any file.
    """
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
        from farm.io import annotations_to_frame, read_annotations

        frames = []
        for path in items:
            df = annotations_to_frame(read_annotations(path))
            if df.empty:
                raise FarmError("no annotations in file", file=path)
            df["generator_2"] = df["generator_2"].replace("", file_stem(path))
            frames.append(df)
        return _normalise(pd.concat(frames, ignore_index=True), where=str(items[0]))
    raise FarmError("expected annotation file paths, Annotation objects or a DataFrame",
                    hint=f"got a list of {type(items[0]).__name__}")


def file_stem(path: str | os.PathLike) -> str:
    """A file's name without .gz/.json/.jsonl: "results/gpt-3.5-turbo.json.gz" → "gpt-3.5-turbo".

    >>> file_stem("results/gpt-3.5-turbo.json.gz"), file_stem("a.b.jsonl")
    ('gpt-3.5-turbo', 'a.b')
    """
    name = Path(path).name
    for suffix in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suffix)
    return name


def _normalise(df: pd.DataFrame, where: str) -> pd.DataFrame:
    if "p_output_2" not in df.columns:
        if "preference" not in df.columns:
            raise FarmError("annotations need 'p_output_2' (P(output_2 better)) or AlpacaEval 'preference'",
                            file=where, field="preference")
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


# ----- integer codes: every per-model / per-instruction sum below is a bincount over these -----

KEY_SEP = "\x1f"  # ASCII unit separator; not NUL: pandas' python-backed strings (no pyarrow) drop a NUL


def _key_strings(frame: pd.DataFrame) -> pd.Series:
    return frame["instruction"] + KEY_SEP + frame["input"]  # one vectorised string per (instruction, input)


def _codes(values: pd.Series, universe: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Index of each value in `universe` (sorted uniques when None); -1 where absent."""
    if universe is None:
        codes, uniques = pd.factorize(values, sort=True)
        return codes, [str(u) for u in uniques]
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
        mi, models = _codes(df["generator_2"], models)
        ki, key_strings = _codes(_key_strings(df), None if keys is None else [KEY_SEP.join(k) for k in keys])
        p = df["p_output_2"].to_numpy(float)
        ok = (mi >= 0) & (ki >= 0) & ~np.isnan(p)
        flat = mi[ok] * len(key_strings) + ki[ok]
        size = len(models) * len(key_strings)
        S = np.bincount(flat, weights=p[ok], minlength=size).reshape(len(models), -1)
        C = np.bincount(flat, minlength=size).astype(float).reshape(len(models), -1)
        keys = list(keys) if keys is not None else [tuple(k.split(KEY_SEP, 1)) for k in key_strings]
        return cls(models, keys, S, C)

    def bootstrap_win_rates(self, n_boot: int, seed: int) -> np.ndarray:
        """(B, M) win rates (×100) under `n_boot` resamples of the instructions, shared by all models."""
        w = bootstrap_counts(len(self.keys), n_boot, seed)  # (B, N)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ self.S.T) / (w @ self.C.T) * 100  # (B, M)


# ----- the leaderboard -----

def winrate_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """AlpacaEval's head-to-head figures per model, computed on every valid row (duplicates count, as there)."""
    m, models = _codes(frame["generator_2"], None)
    p = frame["p_output_2"].to_numpy(float)
    valid = ~np.isnan(p)
    m_valid, p_valid = m[valid], p[valid]

    def per_model(weights: np.ndarray) -> np.ndarray:
        return np.bincount(m_valid, weights=weights, minlength=len(models))

    n = per_model(np.ones_like(p_valid))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = per_model(p_valid) / n
        var = per_model((p_valid - mean[m_valid]) ** 2) / (n - 1)  # sample variance, ddof 1
        discrete = np.where(p_valid > 0.5, 1.0, np.where(p_valid < 0.5, 0.0, 0.5))
        out = pd.DataFrame({
            "win_rate": mean * 100,
            "standard_error": np.sqrt(var) / np.sqrt(n) * 100,
            "n_wins": per_model(p_valid > 0.5).astype(int),
            "n_wins_base": per_model(p_valid < 0.5).astype(int),
            "n_draws": per_model(p_valid == 0.5).astype(int),
            "n_total": n.astype(int),
            "discrete_win_rate": per_model(discrete) / n * 100,
            "n_invalid": np.bincount(m, minlength=len(models)) - n.astype(int),
        }, index=pd.Index(models))
    return out


def average_lengths(frame: pd.DataFrame) -> pd.Series:
    """int(mean characters of each model's outputs), one output per (instruction, input) as AlpacaEval counts
    them from model_outputs.json (annotations of the same output by several judges count once)."""
    m, models = _codes(frame["generator_2"], None)
    k, _ = _codes(_key_strings(frame), None)
    o, _ = pd.factorize(frame["output_2"])
    ident = np.stack([m, k, o], axis=1)
    _, first = np.unique(ident, axis=0, return_index=True)  # one row per distinct (model, instruction, output)
    lengths = frame["output_2"].str.len().to_numpy(float)[first]
    mean = np.bincount(m[first], weights=lengths, minlength=len(models)) / np.bincount(m[first],
                                                                                      minlength=len(models))
    return pd.Series(mean, index=pd.Index(models)).astype(int)


def leaderboard(source: Source, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95, lc: bool = False,
                sort_by: str | None = "win_rate", baseline: str | None = None) -> pd.DataFrame:
    """One row per model (`generator_2`): AlpacaEval's columns, bootstrap interval, optional LC win rate.

    `n_boot=0` skips the bootstrap (the interval columns are NaN). `baseline` keeps only annotations whose
    `generator_1` is that model (several baselines in one frame are an error: their win rates do not compare).
    `sort_by` is a column to sort descending (None keeps model-name order).
    """
    frame = to_frame(source)
    if baseline is not None:
        frame = frame[frame["generator_1"] == baseline]
        if frame.empty:
            raise FarmError(f"no annotations with baseline (generator_1) '{baseline}'")
    baselines = sorted(set(frame["generator_1"].unique()) - {""})
    if len(baselines) > 1:
        raise FarmError(f"annotations against several baselines: {baselines}",
                        hint="pass baseline=... (--baseline) to pick one; win rates vs different baselines do not "
                             "compare")
    out = winrate_stats(frame)
    out["avg_length"] = average_lengths(frame).reindex(out.index)
    if n_boot > 0:
        mat = PreferenceMatrix.from_frame(frame, models=list(out.index))
        lo, hi = percentile_interval(mat.bootstrap_win_rates(n_boot, seed), level)
        out["win_rate_ci_low"], out["win_rate_ci_high"] = lo, hi
    else:
        out["win_rate_ci_low"] = out["win_rate_ci_high"] = np.nan
    out = out[LEADERBOARD_COLUMNS]
    if lc:
        from farm.eval.lc import length_controlled_winrates

        out = out.join(length_controlled_winrates(frame))
    out.index.name = None
    if sort_by is not None:
        if sort_by not in out.columns:
            raise FarmError(f"cannot sort by unknown column '{sort_by}'", hint=f"one of {list(out.columns)}")
        out = out.sort_values(sort_by, ascending=False, kind="stable")
    return out


def read_leaderboard_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A leaderboard CSV (ours or AlpacaEval's published ones: first column = model name)."""
    path = Path(path)
    if not path.exists():
        raise FarmError("file not found", file=path)
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise FarmError(f"cannot read leaderboard CSV: {e}", file=path) from None
    if "win_rate" not in df.columns:
        raise FarmError("leaderboard CSV has no 'win_rate' column", file=path, field="win_rate")
    df.index = df.index.astype(str)
    return df


def format_table(lb: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    """A fixed-width text table for the terminal."""
    cols = list(columns) if columns is not None else [c for c in (
        "win_rate", "standard_error", "win_rate_ci_low", "win_rate_ci_high", "length_controlled_winrate",
        "lc_standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "avg_length") if c in lb.columns]
    shown = lb[cols].copy()
    for c in cols:
        if pd.api.types.is_float_dtype(shown[c]):
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return shown.to_string()


def compare_models(source: Source, model_a: str, model_b: str, *, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> pd.DataFrame:
    """Paired comparison of two models against the same baseline on their common instructions
    (`farm.eval.stats.paired_comparison`: difference of win rates, paired SE, bootstrap interval, t-test)."""
    from farm.eval.stats import paired_comparison

    frame = to_frame(source)
    missing = [m for m in (model_a, model_b) if m not in set(frame["generator_2"])]
    if missing:
        raise FarmError(f"unknown model(s) {missing}", hint=f"models: {sorted(frame['generator_2'].unique())}")
    mat = PreferenceMatrix.from_frame(frame, models=[model_a, model_b])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_instruction = mat.S / mat.C  # (2, N) mean p per instruction, NaN where missing
    return paired_comparison(per_instruction[0], per_instruction[1], name_a=model_a, name_b=model_b,
                             n_boot=n_boot, seed=seed, level=level)
