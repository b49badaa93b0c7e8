"""A simulated annotator pool fitted to *your* human labels: the pool farm's simulations should train and evaluate
with if your humans are the ground truth.

Targets come from your labels (`farm.eval.agreement.human_row`): the humans' leave-one-out agreement
(AlpacaEval's soft score, ties ½), P(prefer longer) and P(prefer first). The pool is AlpacaFarm's recipe on
farm's simulated judges (`farm.annotators.synthetic`): one member per pair drawn from a *mix* of judge families
(the presets gpt4_like, claude_like, chatgpt_like, …), every member's quality term scaled by `sharpness`, its
length bias scaled by `length_scale` and its position bias shifted by `position_shift`, then a share `flip` of
labels flipped. The pool stands in for your humans, so its figures are those of a crowd of its own draws,
computed in closed form on the tasks world's calibration pairs (`farm.worlds.calibration`): leave-one-out
agreement of K independent draws (K = your median number of labels per pair), P(longer) on pairs differing by
more than 5 characters, P(first). The knobs are fitted by least squares, with small pulls toward an even mix and
a sharpness of 1 so the answer is unique.

Hold-out: the labelled pairs are split at random (seeded) into a fitting part and a held-out part; the pool is
fitted to the fitting part's figures and its gap is reported against both. A held-out gap much larger than the
fitting gap says the targets are noisy (too few labels), not that the pool is wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from farm.errors import FarmError

FAMILIES = ("gpt4_like", "gpt4_greedy_like", "claude_like", "chatgpt_like", "davinci003_like", "llama3_70b_like")
FIGURES = ("agreement", "p_prefer_longer", "p_prefer_first")
MIX_PULL = 0.3  # weight of the pull toward an even mix (in points of the figures, per unit of log-weight)


@dataclass
class PoolFit:
    mix: dict[str, float]
    """family → share of pairs its member judges"""
    flip: float
    sharpness: float
    length_scale: float
    position_shift: float
    target_fit: dict[str, float]
    target_held_out: dict[str, float]
    achieved: dict[str, float]
    n_pairs_fit: int
    n_pairs_held_out: int

    def table(self) -> pd.DataFrame:
        """Per figure: target on the fitting labels, on the held-out labels, the pool's value and both gaps."""
        rows = {f: {"target_fit": self.target_fit[f], "target_held_out": self.target_held_out[f],
                    "pool": self.achieved[f], "gap_fit": self.achieved[f] - self.target_fit[f],
                    "gap_held_out": self.achieved[f] - self.target_held_out[f]} for f in FIGURES}
        return pd.DataFrame.from_dict(rows, orient="index")

    def to_record(self) -> dict:
        return asdict(self)

    def annotator(self, quality_fn, slots: int = 20):
        """The fitted pool as an annotator over a world's quality function (the mix realised to 1/`slots`)."""
        from dataclasses import replace

        from farm.annotators.noise import flip
        from farm.annotators.synthetic import PRESETS, SyntheticJudge, SyntheticPool

        counts = _round_shares(np.array([self.mix[f] for f in FAMILIES]), slots)
        members = []
        for fam, n in zip(FAMILIES, counts):
            pr = PRESETS[fam]
            params = replace(pr, position=pr.position + self.position_shift, length=pr.length * self.length_scale,
                             beta=pr.beta * self.sharpness, opinion=pr.opinion * self.sharpness)
            members += [SyntheticJudge(f"{fam}_{k}", quality_fn, params) for k in range(n)]
        pool = SyntheticPool("fitted_pool", members)
        return flip(pool, self.flip) if self.flip > 0 else pool


def _round_shares(shares: np.ndarray, slots: int) -> np.ndarray:
    """Integer counts summing to `slots`, largest remainders first."""
    raw = shares / shares.sum() * slots
    n = np.floor(raw).astype(int)
    n[np.argsort(raw - n)[::-1][: slots - n.sum()]] += 1
    return n


def human_targets(humans: pd.DataFrame) -> dict[str, float]:
    from farm.eval.agreement import human_row

    row = human_row(humans, n_boot=0)
    return {"agreement": row["agreement_soft"], "p_prefer_longer": 100 * row["p_prefer_longer"],
            "p_prefer_first": 100 * row["p_prefer_first"]}


def _world_parts(n_pairs: int, seed: int):
    """Per family: (quality logit β·gap + opinion·z, length feature × preset length, preset position), and the
    world's pairs."""
    from farm.annotators.synthetic import PRESETS, SyntheticJudge
    from farm.worlds.tasks import calibration_pairs, quality_parts

    pairs = calibration_pairs(n_pairs, seed)
    parts = []
    for fam in FAMILIES:
        judge = SyntheticJudge(fam, quality_parts, PRESETS[fam])
        gap, ell, z = judge.features(pairs)
        p = judge.params
        parts.append((p.beta * gap + p.opinion * z, p.length * ell, p.position))
    return parts, pairs


def fit_pool(humans: pd.DataFrame, *, held_out: float = 0.5, seed: int = 0, n_world_pairs: int = 2000
             ) -> PoolFit:
    """Fit the pool's mix, flip rate and length/position weights to the figures of a part of `humans` (rows =
    pairs, `human` = label lists, as `farm.eval.agreement.read_humans` returns) and report both parts."""
    from scipy.optimize import least_squares

    from farm.worlds.calibration import expected_loo, expected_p_longer

    if not 0 < held_out < 1:
        raise FarmError(f"held_out must be in (0, 1), got {held_out}")
    order = np.random.default_rng(seed).permutation(len(humans))
    n_out = int(round(held_out * len(humans)))
    fit_part, out_part = humans.iloc[order[n_out:]], humans.iloc[order[:n_out]]
    if len(fit_part) < 10 or len(out_part) < 10:
        raise FarmError(f"too few labelled pairs to fit and hold out ({len(humans)})", hint="need at least 20")
    target, target_out = human_targets(fit_part), human_targets(out_part)
    use = np.array([np.isfinite(target[f]) for f in FIGURES])
    if not use[1:].all():
        raise FarmError("the labels give no P(prefer longer) or P(prefer first) (no decided pair?)")
    parts, pairs = _world_parts(n_world_pairs, seed)
    k = int(max(2, np.median([sum(v is not None for v in labels) for labels in humans["human"]])))
    F = len(FAMILIES)

    def prob(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, flip_, sharp, scale, shift = x[:F], x[F], np.exp(x[F + 1]), x[F + 2], x[F + 3]
        mix = np.exp(logits - logits.max())
        mix /= mix.sum()
        p = sum(w / (1 + np.exp(-(sharp * base + scale * length - (pos + shift)))) for w, (base, length, pos) in
                zip(mix, parts))
        return (1 - flip_) * p + flip_ * (1 - p), mix

    def figures(x: np.ndarray) -> np.ndarray:
        p, _ = prob(x)
        return np.array([expected_loo(p, draws=k), 100 * expected_p_longer(p, pairs), 100 * (1 - p.mean())])

    goal = np.array([target[f] for f in FIGURES])

    def residuals(x: np.ndarray) -> np.ndarray:
        logits = x[:F]
        return np.concatenate([(figures(x) - goal)[use], MIX_PULL * (logits - logits.mean()), [MIX_PULL * x[F + 1]]])

    x0 = np.r_[np.zeros(F), 0.05, 0.0, 1.0, 0.0]
    lo = np.r_[np.full(F, -4.0), 0.0, np.log(0.2), 0.0, -3.0]
    hi = np.r_[np.full(F, 4.0), 0.5, np.log(5.0), 5.0, 3.0]
    res = least_squares(residuals, x0, bounds=(lo, hi))
    _, mix = prob(res.x)
    got = dict(zip(FIGURES, figures(res.x).tolist()))
    return PoolFit(mix={f: round(float(w), 4) for f, w in zip(FAMILIES, mix)}, flip=round(float(res.x[F]), 4),
                   sharpness=round(float(np.exp(res.x[F + 1])), 4), length_scale=round(float(res.x[F + 2]), 4),
                   position_shift=round(float(res.x[F + 3]), 4),
                   target_fit=target, target_held_out=target_out, achieved=got,
                   n_pairs_fit=len(fit_part), n_pairs_held_out=len(out_part))
