"""The fixed reference behind length control: instruction difficulty and the judge's length slope, fitted once
on many models' annotations against one baseline, then used unchanged for every model's own LC fit.

    python -m farm.eval.cli_lc_reference runs/eval/*/annotations.jsonl --name my_judge --out my_ref.json

(The shipped reference is AlpacaEval's own, rebuilt from its public files: `farm.eval.lc_alpaca`.)

This is the one joint fit over several models, and its use is to make such a reference (AlpacaEval fitted its
instruction difficulty the same way, on its leaderboard: notebooks/instruction_difficulty.ipynb). On the
reference models' annotations (AlpacaEval's length feature x = tanh(Δ / sd_m(Δ)) per model m):

    logit p = θ_m + β_m · x + d_i,        ridge `ridge` on the d_i (θ_m, β_m almost free)

by block coordinate descent (Newton on every model's (θ, β), then on every d_i). The reference keeps
- `difficulty`: d_i per instruction (keyed by a hash of instruction + input);
- `slope`: β_ref, the median of the β_m (how the judge responds to length, for a typical model);
- `gamed_x`: x₀ of the two pseudo "gamed baselines" (`gamed_rows`): every instruction at x = −x₀ (the baseline
  made longer) and at x = +x₀ (made shorter), with target σ(β_ref · x + d_i): what the reference predicts for a
  model of exactly the baseline's quality (θ = 0, γ = 1). They stand in for AlpacaEval's `df_gamed.csv` rows.
`ridge` and `gamed_x` were chosen by leave-models-out cross-fitting on the AlpacaEval 1 files
(bench/bench_lc.py; docs/evaluation.md has the numbers).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.eval.frames import codes, key_strings, to_frame
from farm.eval.glm import fit_groups, sigmoid

GAMED_WEIGHT = 0.2  # AlpacaEval's regularize_to_baseline_lambda: the gamed rows' total weight, split over two
DEFAULT_RIDGE = 0.3
DEFAULT_GAMED_X = 0.4
SHIPPED = Path(__file__).parent / "data" / "lc_reference.json"
MIN_COVERAGE = 0.9  # share of a frame's instructions a reference must know to be picked automatically


def instruction_hash(key: str) -> str:
    """12 hex digits of sha256 over instruction + KEY_SEP + input (what the reference file stores).

    >>> instruction_hash("Say hi." + "\\x1f" + "")  # KEY_SEP = "\\x1f"
    '46e2099ba204'
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass
class LCReference:
    name: str
    annotator: str
    baseline: str
    slope: float
    gamed_x: float
    ridge: float
    models: list[str]
    source: str
    """where the annotations came from"""
    difficulty: dict[str, float] = field(repr=False)
    """instruction_hash(instruction + KEY_SEP + input) → d"""
    gamed: list[dict] = field(default_factory=list, repr=False)
    """explicit gamed baselines ({name, keys, x, p}: per instruction hash, tanh(std Δ) and target); empty: the
    two pseudo rows at ±gamed_x"""
    any_baseline: bool = False
    """used for every baseline on its instructions (AlpacaEval's reference), not only against `baseline`"""
    calibration: dict = field(default_factory=dict)
    """how the difficulty scale was set (`farm.eval.lc_alpaca.fit_scale`), when it was"""

    def difficulty_of(self, keys: pd.Series) -> np.ndarray:
        """d of each (instruction, input) key string; 0 where the reference does not know the instruction."""
        return np.array([self.difficulty.get(instruction_hash(k), 0.0) for k in keys], dtype=float)

    def coverage(self, keys: pd.Series) -> float:
        uniq = pd.unique(keys)
        return float(np.mean([instruction_hash(k) in self.difficulty for k in uniq])) if len(uniq) else 0.0

    def gamed_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(F, y) of the gamed baselines, F = [x, d, 0] (no quality term): the explicit ones in `gamed` in order,
        or else two pseudo ones with y = σ(β_ref x + d), first every instruction made longer (x = −x₀), then
        every instruction made shorter (x = +x₀)."""
        if self.gamed:
            x = np.concatenate([np.asarray(g["x"], float) for g in self.gamed])
            dd = np.concatenate([[self.difficulty.get(k, 0.0) for k in g["keys"]] for g in self.gamed])
            y = np.concatenate([np.asarray(g["p"], float) for g in self.gamed])
            return np.stack([x, dd, np.zeros_like(x)], axis=1), y
        d = np.array([self.difficulty[k] for k in sorted(self.difficulty)])
        x = np.concatenate([np.full(len(d), -self.gamed_x), np.full(len(d), self.gamed_x)])
        dd = np.concatenate([d, d])
        F = np.stack([x, dd, np.zeros_like(x)], axis=1)
        return F, sigmoid(self.slope * x + dd)

    def to_record(self) -> dict:
        return asdict(self)


# ----- fitting -----

def length_features(output_1: pd.Series, output_2: pd.Series) -> np.ndarray:
    """tanh(Δ / sd(Δ)), Δ = len(output_1) − len(output_2) (baseline − model, AlpacaEval's sign), sd with ddof 1
    over these rows (0 where sd is 0 or undefined).

    >>> length_features(pd.Series(["aaaa", "aa"]), pd.Series(["aa", "aaaa"])).round(4).tolist()
    [0.6089, -0.6089]
    """
    delta = (output_1.str.len() - output_2.str.len()).to_numpy(float)
    sd = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    return np.tanh(delta / sd) if sd > 0 and np.isfinite(sd) else np.zeros_like(delta)


def joint_fit(frame: pd.DataFrame, ridge: float = DEFAULT_RIDGE, ridge_model: float = 1e-4,
              max_rounds: int = 500, tol: float = 1e-8) -> tuple[pd.Series, pd.DataFrame]:
    """logit p = θ_m + β_m x + d_i over every model's valid annotations (x = AlpacaEval's length feature per
    model). Returns d (indexed by key string) and a frame of θ, β per model."""
    frame = to_frame(frame)
    x = np.zeros(len(frame))
    for _, idx in frame.groupby("generator_2").indices.items():
        rows = frame.iloc[idx]
        x[idx] = length_features(rows["output_1"], rows["output_2"])
    ok = frame["p_output_2"].notna().to_numpy()
    m, models = codes(frame["generator_2"][ok], None)
    k, keys = codes(key_strings(frame)[ok], None)
    y, x = frame["p_output_2"].to_numpy(float)[ok], x[ok]
    F_model, F_instr = np.stack([np.ones_like(x), x], axis=1), np.ones((len(x), 1))
    w, d = np.zeros((len(models), 2)), np.zeros(len(keys))
    for _ in range(max_rounds):
        w_new = fit_groups(y, F_model, m, len(models), [ridge_model] * 2, offset=d[k], w0=w, iters=3)
        d_new = fit_groups(y, F_instr, k, len(keys), [ridge], offset=w_new[m, 0] + w_new[m, 1] * x,
                           w0=d[:, None], iters=3)[:, 0]
        moved = max(np.abs(w_new - w).max(), np.abs(d_new - d).max())
        w, d = w_new, d_new
        if moved < tol:
            break
    return (pd.Series(d, index=pd.Index(keys), name="difficulty"),
            pd.DataFrame(w, index=pd.Index(models), columns=["theta", "beta"]))


def fit_reference(annotations, *, name: str, ridge: float = DEFAULT_RIDGE, gamed_x: float = DEFAULT_GAMED_X,
                  source: str = "") -> LCReference:
    """A reference from many models' annotations against one baseline (anything `to_frame` reads)."""
    frame = to_frame(annotations)
    baselines = sorted(set(frame["generator_1"]) - {""})
    if len(baselines) > 1:
        raise FarmError(f"a reference is fitted against one baseline, got {baselines}")
    if frame["generator_2"].nunique() < 3:
        raise FarmError("a reference needs the annotations of at least 3 models",
                        hint=f"got {sorted(frame['generator_2'].unique())}")
    d, per_model = joint_fit(frame, ridge)
    annotators = sorted(set(frame.get("annotator", pd.Series(dtype=str)).dropna().astype(str)) - {""})
    return LCReference(name=name, annotator=",".join(annotators), baseline=baselines[0] if baselines else "",
                       slope=float(per_model["beta"].median()), gamed_x=gamed_x, ridge=ridge,
                       models=sorted(per_model.index), source=source,
                       difficulty={instruction_hash(k): round(float(v), 6) for k, v in d.items()})


# ----- the shipped file -----

def load_references(path: str | os.PathLike = SHIPPED) -> list[LCReference]:
    path = Path(path)
    if not path.exists():
        raise FarmError("LC reference file not found", file=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [LCReference(**r) for r in data["references"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FarmError(f"not an LC reference file: {e}", file=path,
                        hint="write one with `python -m farm.eval.lc_reference`") from None


def save_reference(ref: LCReference, path: str | os.PathLike) -> Path:
    """Add `ref` to the reference file at `path` (replacing one of the same name)."""
    from farm.io import atomic_write_text

    path = Path(path)
    refs = [r for r in (load_references(path) if path.exists() else []) if r.name != ref.name] + [ref]
    atomic_write_text(path, json.dumps({"references": [r.to_record() for r in sorted(refs, key=lambda r: r.name)]},
                                       indent=1, sort_keys=True) + "\n")
    return path


def find_reference(frame: pd.DataFrame, which: str = "auto") -> LCReference | None:
    """`which`: "auto" = a shipped reference that knows ≥ 90% of the frame's instructions and is fitted against
    its baseline or made for any baseline (AlpacaEval's; one against the baseline first), None when there is
    none; a shipped reference's name; or a reference file (its only entry, or the one against this baseline)."""
    baselines = set(frame["generator_1"]) - {""}
    keys = key_strings(frame)
    if which == "auto":
        fits = [r for r in load_references()
                if (r.baseline in baselines or r.any_baseline) and r.coverage(keys) >= MIN_COVERAGE]
        fits.sort(key=lambda r: r.baseline not in baselines)
        return fits[0] if fits else None
    if Path(which).exists():
        refs = load_references(which)
        fits = [r for r in refs if r.baseline in baselines] or refs
        return fits[0]
    named = {r.name: r for r in load_references()}
    if which not in named:
        raise FarmError(f"unknown LC reference '{which}'", hint=f"shipped: {sorted(named)}, or give a file")
    return named[which]
