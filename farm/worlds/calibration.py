"""Calibrating the simulated judges to AlpacaEval's evaluator leaderboard (humans and LLM judges).

The three figures, defined as AlpacaEval's `analyze.py` defines them (Dubois et al. 2023):
- **human agreement**. For humans: leave-one-out — each of the 4 independent human draws of a pair against the
  majority (median) of the other 3, averaged. For a judge: each of its 4 seeds against the majority of the 4
  human draws, where a 2–2 tie scores 0.5. Score = 1 − |verdict − majority|.
- **P(prefer longer)**: on the first annotation of each pair, among pairs whose outputs differ by more than
  `LENGTH_DELTA` characters, the share where the preferred output is the longer. AlpacaEval uses 30 characters on
  outputs of ~1,000; ours are ~30 characters long, so we use 5 (larger than a one-token change of a number).
- **P(prefer first)**: 1 − mean(p) over all annotations.

The fit is analytic: a judge's P(output_2 wins) per pair is known in closed form (`SyntheticJudge.probabilities`),
so the expected figures are smooth functions of (beta, length, position), matched to the targets by least
squares, the human first and then every LLM-like preset against the fitted human. `achieved` figures are then
measured by actually sampling annotations (4 human draws, 4 judge seeds), as one would with real judges.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from farm.annotators.synthetic import (
    PRESETS,
    TARGETS,
    TRAIN_FLIP,
    JudgeParams,
    SyntheticJudge,
    make_annotator,
    pool_members,
)
from farm.types import Annotation, Pair

HUMAN_DRAWS = 4  # AlpacaFarm cross-annotated each pair by 4 humans
JUDGE_SEEDS = 4  # AlpacaEval cross-annotates each judge 4 times
LENGTH_DELTA = 5
LEADERBOARD = "alpaca_eval/leaderboards/evaluators/evaluators_leaderboard.csv"


def targets_path(shared_dir: str | Path | None = None) -> Path | None:
    """The evaluators leaderboard CSV in the shared data folder, or None when absent."""
    from farm.data import shared_data_dir

    d = shared_data_dir(shared_dir)
    return d / LEADERBOARD if d and (d / LEADERBOARD).exists() else None


def load_targets(shared_dir: str | Path | None = None) -> dict[str, tuple[str, float, float, float]]:
    """TARGETS, refreshed from ../shared/data's evaluators_leaderboard.csv when it is present."""
    targets = dict(TARGETS)
    path = targets_path(shared_dir)
    if path is None:
        return targets
    with open(path, newline="") as f:
        rows = {r[""]: r for r in csv.DictReader(f)}
    for name, (row, *_) in TARGETS.items():
        if row in rows:
            r = rows[row]
            targets[name] = (row, float(r["Human agreement"]), float(r["Proba. prefer longer"]),
                             float(r["Proba. prefer 1"]))
    return targets


# ----- expected figures (closed form, used by the fit) -----

def _binom_majority(h: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """P(majority of n Bernoulli(h) votes says 'output_2'), P(exact tie)."""
    from scipy.stats import binom

    k = np.arange(n + 1)
    pmf = binom.pmf(k[None, :], n, h[:, None])  # (N, n+1)
    win = pmf[:, k * 2 > n].sum(1)
    tie = pmf[:, k * 2 == n].sum(1) if n % 2 == 0 else np.zeros_like(h)
    return win, tie


def expected_loo(h: np.ndarray, draws: int = HUMAN_DRAWS) -> float:
    """Expected leave-one-out agreement of binary draws with P(output_2) = h, in %.

    >>> round(expected_loo(np.array([0.5, 1.0])), 1)
    75.0
    """
    win, tie = _binom_majority(h, draws - 1)
    return 100 * float(np.mean(h * (win + tie / 2) + (1 - h) * (1 - win - tie / 2)))


def expected_agreement(p: np.ndarray, h: np.ndarray, soft: bool = False) -> float:
    """Expected agreement (%) of a judge (P(output_2) = p per pair) with the majority of 4 human draws."""
    win, tie = _binom_majority(h, HUMAN_DRAWS)
    if soft:  # the judge answers p itself: score 1 − |p − majority|
        return 100 * float(np.mean(win * p + (1 - win - tie) * (1 - p) + tie * (1 - np.abs(p - 0.5))))
    return 100 * float(np.mean(p * (win + tie / 2) + (1 - p) * (1 - win - tie / 2)))


def _longer_second(pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    d = np.array([len(p.output_2) - len(p.output_1) for p in pairs])
    return np.abs(d) > LENGTH_DELTA, d > 0


def expected_p_longer(p: np.ndarray, pairs: Sequence[Pair], soft: bool = False) -> float:
    eligible, second = _longer_second(pairs)
    if soft:  # a soft verdict "prefers" output_2 when p ≥ 0.5; smoothed so the fit has a gradient
        p = 1 / (1 + np.exp(-(p - 0.5) / 0.02))
    return float(np.mean(np.where(second, p, 1 - p)[eligible]))


# ----- measured figures (from sampled annotations) -----

def _prefs(anns: Sequence[Annotation]) -> np.ndarray:
    return np.array([np.nan if a.preference is None else a.preference for a in anns], dtype=float)


def measured_loo(draws: Sequence[Sequence[Annotation]]) -> float:
    v = np.stack([_prefs(d) for d in draws])  # (draws, N)
    scores = [1 - np.abs(v[k] - np.median(np.delete(v, k, axis=0), axis=0)) for k in range(len(v))]
    return 100 * float(np.nanmean(scores))


def measured_agreement(judge_seeds: Sequence[Sequence[Annotation]], human_draws: Sequence[Sequence[Annotation]]
                       ) -> float:
    majority = np.median(np.stack([_prefs(d) for d in human_draws]), axis=0)
    return 100 * float(np.nanmean([1 - np.abs(_prefs(s) - majority) for s in judge_seeds]))


def measured_p_longer(anns: Sequence[Annotation]) -> float:
    eligible, second = _longer_second([a.pair for a in anns])
    best_second = _prefs(anns) >= 0.5
    return float(np.mean((best_second == second)[eligible]))


def measured_p_first(all_anns: Sequence[Sequence[Annotation]]) -> float:
    return float(1 - np.nanmean(np.concatenate([_prefs(a) for a in all_anns])))


# ----- fitting -----

def fit_params(name: str, pairs: Sequence[Pair], quality_fn, target: tuple[float, float, float],
               start: JudgeParams, h: np.ndarray | None = None) -> JudgeParams:
    """Least-squares fit of (beta, length, position) to (agreement %, P(longer), P(first)).

    `h` = the human's P(output_2) per pair (None when fitting the human itself, whose agreement is LOO).
    """
    from scipy.optimize import least_squares

    if h is None and (start.opinion or start.attention < 1):
        raise ValueError("the human fit assumes draws share one probability (opinion=0, attention=1)")
    gap, ell, z = SyntheticJudge(name, quality_fn, start).features(pairs)
    agree_t, longer_t, first_t = target

    def figures(x: np.ndarray) -> np.ndarray:
        beta, length, position = x
        p = 1 / (1 + np.exp(-(beta * gap + length * ell - position + start.opinion * z)))
        agree = expected_loo(p) if h is None else expected_agreement(p, h, start.soft)
        return np.array([agree, 100 * expected_p_longer(p, pairs, start.soft), 100 * (1 - p.mean())])

    res = least_squares(lambda x: figures(x) - np.array([agree_t, 100 * longer_t, 100 * first_t]),
                        x0=[start.beta, start.length, start.position],
                        bounds=([0.0, -5.0, -3.0], [60.0, 5.0, 3.0]), x_scale=[3.0, 0.5, 0.2])
    beta, length, position = (round(float(v), 3) for v in res.x)
    return replace(start, beta=beta, length=length, position=position)


def fit_pool(pairs: Sequence[Pair], quality_fn, target: tuple[float, float],
             presets: dict[str, JudgeParams] | None = None) -> tuple[float, float]:
    """(POOL_LENGTH, POOL_POSITION): the scale of the members' length biases and the shift of their position
    biases that give the training pool (uniform member, then TRAIN_FLIP flips) the target (P(longer), P(first))."""
    from scipy.optimize import least_squares

    parts = []  # features do not depend on the biases: compute them once per member
    for m in pool_members(quality_fn, presets, length_scale=1.0, position_shift=0.0):
        gap, ell, z = m.features(pairs)
        p = m.params
        parts.append((p.beta * gap - p.position + p.opinion * z, p.length * ell))

    def figures(x: np.ndarray) -> np.ndarray:
        scale, shift = x
        prob = np.mean([1 / (1 + np.exp(-(base - shift + scale * length))) for base, length in parts], axis=0)
        prob = (1 - TRAIN_FLIP) * prob + TRAIN_FLIP * (1 - prob)
        return 100 * np.array([expected_p_longer(prob, pairs), 1 - prob.mean()])

    res = least_squares(lambda x: figures(x) - 100 * np.array(target), x0=[1.0, 0.0],
                        bounds=([0.0, -3.0], [10.0, 3.0]))
    return round(float(res.x[0]), 3), round(float(res.x[1]), 3)


def fit_all(pairs: Sequence[Pair], quality_fn, targets: dict | None = None
            ) -> tuple[dict[str, JudgeParams], tuple[float, float]]:
    """Refit every preset (human first), then the pools' biases; returns (PRESETS, (POOL_LENGTH, POOL_POSITION))
    to compare with the ones in code."""
    targets = targets or load_targets()
    fitted = {"human": fit_params("human", pairs, quality_fn, targets["human"][1:], PRESETS["human"])}
    h = SyntheticJudge("human", quality_fn, fitted["human"]).probabilities(pairs)
    for name, start in PRESETS.items():
        if name != "human" and name in targets:
            fitted[name] = fit_params(name, pairs, quality_fn, targets[name][1:], start, h=h)
    return fitted, fit_pool(pairs, quality_fn, targets["alpacafarm_pool"][2:], fitted)


# ----- the calibration table -----

def calibration_table(pairs: Sequence[Pair], quality_fn, targets: dict | None = None, progress: bool = False):
    """Target vs achieved (sampled) figures for the human, every preset, the pools, `gold` and `longest`."""
    import pandas as pd
    from tqdm.auto import tqdm

    targets = targets or load_targets()
    humans = [make_annotator("human", quality_fn, seed=k).annotate(pairs, seed=0) for k in range(HUMAN_DRAWS)]
    rows = [{"judge": "human", "source": targets["human"][0],
             "agreement_target": targets["human"][1], "agreement": measured_loo(humans),
             "p_longer_target": targets["human"][2], "p_longer": measured_p_longer(humans[0]),
             "p_first_target": targets["human"][3], "p_first": measured_p_first(humans)}]
    names = [n for n in PRESETS if n != "human"] + ["eval_pool", "alpacafarm_pool", "gold", "longest"]
    for name in tqdm(names, desc="calibrate", disable=not progress, leave=False):
        judge = make_annotator(name, quality_fn)
        seeds = [judge.annotate(pairs, seed=s) for s in range(JUDGE_SEEDS)]
        src, *t = targets.get(name, ("", np.nan, np.nan, np.nan))
        if name == "eval_pool":  # AlpacaFarm paper: the simulated evaluation pool agrees 65% with humans
            src, t = "AlpacaFarm paper (p_sim^eval)", [65.0, np.nan, np.nan]
        rows.append({"judge": name, "source": src,
                     "agreement_target": t[0], "agreement": measured_agreement(seeds, humans),
                     "p_longer_target": t[1], "p_longer": measured_p_longer(seeds[0]),
                     "p_first_target": t[2], "p_first": measured_p_first(seeds)})
    return pd.DataFrame(rows)


def plot_table(table, path: str | Path) -> Path:
    """Grouped bars: target vs achieved for each judge and figure; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [("agreement", "human agreement (%)", 1.0), ("p_longer", "P(prefer longer)", 100.0),
            ("p_first", "P(prefer first)", 100.0)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = np.arange(len(table))
    for ax, (col, title, scale) in zip(axes, figs):
        ax.bar(x - 0.2, table[f"{col}_target"] * scale, 0.4, label="target (AlpacaEval)", color="#999")
        ax.bar(x + 0.2, table[col] * scale, 0.4, label="achieved (simulated)", color="#2a7")
        ax.set_xticks(x, table["judge"], rotation=60, ha="right", fontsize=8)
        ax.set_title(title + (" ×100" if scale == 100 else ""))
        ax.set_ylim(30 if col != "p_longer" else 40, 105)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
