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
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.eval.frames import (
    FRAME_COLUMNS,
    KEY_SEP,
    PreferenceMatrix,
    Source,
    codes,
    file_stem,
    input_notes,
    key_strings,
    to_frame,
)
from farm.eval.stats import percentile_interval

LEADERBOARD_COLUMNS = ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
                       "discrete_win_rate", "avg_length", "n_invalid", "win_rate_ci_low", "win_rate_ci_high"]
__all__ = ["FRAME_COLUMNS", "KEY_SEP", "LEADERBOARD_COLUMNS", "PreferenceMatrix", "Source", "average_lengths",
           "compare_models", "file_stem", "format_table", "input_notes", "leaderboard", "read_leaderboard_csv",
           "to_frame", "winrate_stats"]


# ----- the leaderboard -----

def winrate_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """AlpacaEval's head-to-head figures per model, computed on every valid row (duplicates count, as there)."""
    m, models = codes(frame["generator_2"], None)
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
    m, models = codes(frame["generator_2"], None)
    k, _ = codes(key_strings(frame), None)
    o, _ = pd.factorize(frame["output_2"])
    ident = np.stack([m, k, o], axis=1)
    _, first = np.unique(ident, axis=0, return_index=True)  # one row per distinct (model, instruction, output)
    lengths = frame["output_2"].str.len().to_numpy(float)[first]
    mean = np.bincount(m[first], weights=lengths, minlength=len(models)) / np.bincount(m[first],
                                                                                      minlength=len(models))
    return pd.Series(mean, index=pd.Index(models)).astype(int)


def leaderboard(source: Source, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95, lc: bool = False,
                sort_by: str | None = "win_rate", baseline: str | None = None, name_from: str = "generator",
                merge: bool = False, lc_reference: str | object | None = "auto") -> pd.DataFrame:
    """One row per model (`generator_2`): AlpacaEval's columns, bootstrap interval, optional LC win rate.

    `n_boot=0` skips the bootstrap (the interval columns are NaN). `baseline` keeps only annotations whose
    `generator_1` is that model (several baselines in one frame are an error: their win rates do not compare).
    `sort_by` is a column to sort descending (None keeps model-name order). `name_from`, `merge`: how files
    name their rows (`farm.eval.frames`). `lc_reference`: which reference LC uses (`farm.eval.lc`).
    """
    frame = to_frame(source, name_from=name_from, merge=merge)
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

        out = out.join(length_controlled_winrates(frame, lc_reference))
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
        "lc_standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "n_invalid", "avg_length",
        "rating", "rating_ci_low", "rating_ci_high") if c in lb.columns]
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
