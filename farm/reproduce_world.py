"""Study 4 of `farm reproduce`: on the synthetic world, is label noise what makes best-of-n over-optimise?

AlpacaFarm (Dubois et al. 2023, §4.2 and Fig. 4) found that simulated annotators reproduce the over-optimisation
seen with humans only when their labels are noisy (the training pool's 25% flips stand for human variability).
We sweep the training labels' flip rate: for each rate the same on-policy pairs of a `farm compare` run are
re-labelled by the eval pool with that many flips, a reward model is trained on them, and the run's best-of-n
candidates are re-ranked by it. The gold win rate vs n shows where (and whether) picking by the proxy stops
helping or starts hurting.

    farm reproduce world_noise                   # makes a small compare run first (≈1–2 min), then sweeps
    farm reproduce world_noise --run runs/quickstart
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError

FLIPS = (0.0, 0.1, 0.25, 0.4)


def _small_run(seed: int) -> Path:
    from farm.data import REPO_ROOT
    from farm.run import compare

    run_dir = Path("runs") / f"reproduce_world_noise_seed{seed}"
    compare(REPO_ROOT / "configs" / "quickstart.yaml",
            [f"run_dir={run_dir}", f"seed={seed}", "methods=[sft,best_of_n]", "progress=false"],
            log=lambda s: None)
    return run_dir


def study_world_noise(data=None, *, run: str | Path | None = None, flips: Sequence[float] = FLIPS, seed: int = 0,
                      n_boot: int = 0, rm_epochs: float = 3.0) -> dict[str, pd.DataFrame]:
    """Gold win rate and proxy reward of best-of-n vs n, one curve per training-label flip rate."""
    from farm.annotators import annotate_pairs
    from farm.annotators.noise import chain, flip
    from farm.eval.report import gold_wins
    from farm.io import read_pairs, read_records, write_annotations
    from farm.methods import reward
    from farm.methods.scorers import RewardModelScorer
    from farm.worlds.tasks import build

    run_dir = Path(run) if run else _small_run(seed)
    cand_path = run_dir / "outputs" / "best_of_n_candidates.jsonl"
    for need in (cand_path, run_dir / "data" / "pairs.jsonl", run_dir / "models" / "sft" / "model"):
        if not Path(need).exists():
            raise FarmError("the run lacks a file this study needs (run `farm compare` with best_of_n first)",
                            file=need)
    world = build(seed)
    pairs = read_pairs(run_dir / "data" / "pairs.jsonl")
    recs = read_records(run_dir / "data" / "eval.json")
    base = read_records(run_dir / "data" / "baseline_outputs.json")
    cands = read_records(cand_path)
    n = max(c["j"] for c in cands) + 1
    grid = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    texts = [c["output"] for c in cands]
    rows, agreement = [], []
    gold = [world.quality(recs[i]["instruction"], recs[i].get("input", ""), t) for i, t in
            ((k // n, t) for k, t in enumerate(texts))]
    for rate in flips:
        labeller = chain(world.annotator("eval_pool", seed=seed), flip(rate)) if rate else \
            world.annotator("eval_pool", seed=seed)
        anns = annotate_pairs(pairs, labeller, seed=seed, cache_path=run_dir / "cache.sqlite", progress=False)
        out = run_dir / "noise_sweep" / f"flip_{rate:.2f}"
        write_annotations(out / "preferences.jsonl", anns)
        cfg = reward.Config(policy=str(run_dir / "models" / "sft" / "model"), data=str(out / "preferences.jsonl"),
                            output_dir=str(out / "reward"), max_len=160)
        cfg.train.lr, cfg.train.epochs, cfg.train.per_device_batch_size = 1e-3, rm_epochs, 32
        cfg.train.seed, cfg.train.progress = seed, False
        res = reward.run(cfg)
        scorer = RewardModelScorer(str(out / "reward" / "model"), style="alpaca", device="cpu")
        proxy = np.array(scorer.score([recs[k // n] for k in range(len(texts))], texts))
        decided = [(a.preference, a.pair) for a in anns if a.preference not in (None, 0.5)]
        q = [(world.quality(p.instruction, p.input, p.output_1), world.quality(p.instruction, p.input, p.output_2), v)
             for v, p in decided]
        agree = np.mean([(v > 0.5) == (q2 > q1) for q1, q2, v in q if q1 != q2])
        agreement.append({"flip": rate, "label_gold_agreement": agree,
                          "rm_heldout_accuracy": (res.get("heldout") or {}).get("accuracy")})
        for k in grid:
            best = [i * n + int(np.argmax(proxy[i * n:i * n + k])) for i in range(len(recs))]
            rows.append({"flip": rate, "n": k, "proxy_reward": float(proxy[best].mean()),
                         "gold_quality": float(np.mean([gold[b] for b in best])),
                         "gold_win_rate": 100 * float(np.mean(gold_wins(world.quality, recs, base, [texts[b] for b in best])))})
    curves = pd.DataFrame(rows)
    summary = []
    for rate, d in curves.groupby("flip"):
        peak = d.loc[d.gold_win_rate.idxmax()]
        last = d.iloc[-1]
        summary.append({"figure": f"flip {rate:.2f}: gold win rate at n=1 → best n → n={int(last.n)}",
                        "published": np.nan, "ours": float(last.gold_win_rate - d.iloc[0].gold_win_rate),
                        "ci_low": np.nan, "ci_high": np.nan,
                        "note": f"{d.iloc[0].gold_win_rate:.1f} → {peak.gold_win_rate:.1f} (n={int(peak.n)}) → "
                                f"{last.gold_win_rate:.1f}; 'ours' = gain of n={int(last.n)} over n=1"})
    return {"summary": pd.DataFrame(summary), "curves": curves, "labels": pd.DataFrame(agreement)}
