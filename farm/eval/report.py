"""The statistics and the report of a `farm compare` run: method-level win rates over seeds and prompts, paired
differences with SFT, minimum detectable differences, rank correlations between judges, over-optimisation curves,
`report.md`, and `farm report RUN [--markdown] [--write-docs]`.

Rows of a run are `method` (seed 0) and `method@sK` (seed K); every row answered every eval prompt under every
judge. `v[m, s, i]` = P(row (m, s) better than the baseline on prompt i). Intervals come from the hierarchical
bootstrap of `farm.eval.power` (seeds, then prompts; the same draws for every method and judge).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from farm.eval import power
from farm.io import read_records

JUDGE_LABELS = {"human": "simulated human", "pool": "eval pool", "gold": "gold"}


def environment(threads: int, workers: int = 1, votes: int = 1) -> dict[str, Any]:
    """What the numbers were measured on (environment.json in the run folder)."""
    import os

    import torch

    import farm

    return {"farm": farm.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "threads_setting": threads, "workers": workers, "votes": votes,
            "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "processor": _cpu_name(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ----- per-prompt preference arrays -----

def preference_array(path: str | Path, methods: list[str], n_seeds: int) -> tuple[np.ndarray, list[str]]:
    """(v (M, S, N), prompt keys) from one judge's annotation file of a run (rows named by `farm.run.seeded`)."""
    from farm.run_config import seeded

    df = pd.DataFrame(read_records(path))
    df["key"] = df["instruction"] + "\x00" + df.get("input", pd.Series("", index=df.index)).fillna("")
    wide = df.pivot_table(index="key", columns="generator_2", values="p_output_2", aggfunc="mean", dropna=False)
    keys = list(wide.index)
    v = np.full((len(methods), n_seeds, len(keys)), np.nan)
    for a, m in enumerate(methods):
        for s in range(n_seeds):
            col = seeded(m, s)
            if col in wide.columns:
                v[a, s] = wide[col].to_numpy(float)
    return v, keys


def method_stats(v: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Point win rates (M,) and bootstrap replicates (B, M), ×100."""
    return {"point": 100 * power.point_means(v), "boot": 100 * power.resampled_means(v, n_boot, seed)}


# ----- the leaderboard stage -----

def leaderboards(run, annotations: dict[str, str]) -> dict:
    """leaderboard_{judge}.csv (one row per method and seed, AlpacaEval columns), leaderboard.csv (one row per
    method: win rate over seeds and prompts ± bootstrap SE, 95% interval, LC, length), paired_vs_sft.csv,
    correlation.csv (+ correlation_pool_vs_human.csv), and the minimum detectable difference per judge."""
    from farm.eval import leaderboard

    cfg = run.cfg
    methods, S = list(cfg.methods), cfg.method_seeds
    per_row, stats, arrays = {}, {}, {}
    for label, path in annotations.items():
        lb = leaderboard(path, n_boot=cfg.n_boot, seed=cfg.seed, lc=True)
        lb.to_csv(run.p(f"leaderboard_{label}.csv"))
        per_row[label] = lb
        arrays[label], _ = preference_array(path, methods, S)
        stats[label] = method_stats(arrays[label], cfg.n_boot, cfg.seed)  # same draws for every judge
    table = _method_table(run, methods, per_row, stats)
    table.to_csv(run.p("leaderboard.csv"))
    out: dict[str, Any] = {"leaderboard": str(run.p("leaderboard.csv")), "n_prompts": int(arrays["pool"].shape[2]),
                           "n_seeds": S}
    if "sft" in methods and len(methods) > 1:
        paired = paired_table(methods, arrays, stats, ref="sft")
        paired.to_csv(run.p("paired_vs_sft.csv"), index=False)
        out["mde_80"] = {j: round(float(paired[paired.judge == j]["mde_80"].median()), 2)
                         for j in annotations}
        out["separated_gold"] = int(paired[(paired.judge == "gold")]["separated"].sum()) if "gold" in annotations \
            else None
    if len(methods) >= 3:
        corr = correlation_table(methods, stats)
        corr.to_csv(run.p("correlation.csv"), index=False)
        pvh = corr[corr.pair == "pool vs human"].set_index("statistic")
        pvh.drop(columns=["pair"]).to_csv(run.p("correlation_pool_vs_human.csv"))
        out["correlation"] = {f"{r.pair}: {r.statistic}": {"value": round(r.value, 3), "ci_low": round(r.ci_low, 3),
                                                           "ci_high": round(r.ci_high, 3)}
                              for r in corr.itertuples() if r.statistic == "spearman"}
    return out


def _method_table(run, methods, per_row, stats) -> pd.DataFrame:
    from farm.run_config import seeded

    cols = {}
    for label, st in stats.items():
        lb = per_row[label]
        ivs = [power.interval(st["point"][a], st["boot"][:, a]) for a in range(len(methods))]
        cols[f"{label}_win_rate"] = st["point"]
        cols[f"{label}_standard_error"] = st["boot"].std(0, ddof=1)
        cols[f"{label}_win_rate_ci_low"] = [iv.low for iv in ivs]
        cols[f"{label}_win_rate_ci_high"] = [iv.high for iv in ivs]
        for c in ("length_controlled_winrate", "avg_length"):
            if c in lb.columns:
                cols[f"{label}_{c}"] = [np.nanmean([lb.loc[r, c] for r in
                                                    [seeded(m, s) for s in range(run.cfg.method_seeds)]
                                                    if r in lb.index]) for m in methods]
    table = pd.DataFrame(cols, index=pd.Index(methods, name="method"))
    table["n_seeds"] = run.cfg.method_seeds
    order = "gold_win_rate" if "gold_win_rate" in table else "human_win_rate"
    return table.sort_values(order, ascending=False)


def paired_table(methods: list[str], arrays: dict, stats: dict, ref: str = "sft") -> pd.DataFrame:
    """Each method − `ref` per judge on the same prompts and seed indices: Δ (points), bootstrap SE, 95% interval,
    p-values, the minimum difference this run's size detects with 80% power, and the variance components."""
    r = methods.index(ref)
    rows = []
    for label, st in stats.items():
        v = arrays[label]
        for a, m in enumerate(methods):
            if a == r:
                continue
            boot = st["boot"][:, a] - st["boot"][:, r]
            est = float(st["point"][a] - st["point"][r])
            iv = power.interval(est, boot)
            se = float(boot.std(ddof=1))
            c = power.variance_components(100 * (v[a] - v[r]))
            tail = min((boot <= 0).mean(), (boot >= 0).mean())
            rows.append({"judge": label, "model_a": m, "model_b": ref, "difference": est, "standard_error": se,
                         "ci_low": iv.low, "ci_high": iv.high, "separated": bool(iv.low > 0 or iv.high < 0),
                         "p_value_bootstrap": max(2 * tail, 1 / len(boot)),
                         "p_value_normal": float(2 * power.sps.norm.sf(abs(est) / se)) if se > 0 else float("nan"),
                         "mde_80": power.minimum_detectable(se), "sd_prompt": c.prompt ** 0.5,
                         "sd_seed": c.seed ** 0.5, "sd_residual": c.residual ** 0.5, "n_seeds": v.shape[1],
                         "n_prompts": v.shape[2]})
    return pd.DataFrame(rows)


def rank_agreement(a: dict, b: dict, statistic: str = "spearman") -> tuple[float, float, float]:
    """(estimate, low, high) of the rank correlation between two judges' method win rates, from their
    `method_stats` (made with the same seed, so with the same resampled seeds and prompts)."""
    from farm.eval.correlation import correlations

    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(np.ravel(correlations(a["point"][None], b["point"][None])[statistic])[0])
        boot = np.ravel(correlations(a["boot"], b["boot"])[statistic])
    iv = power.interval(point, boot)
    return point, iv.low, iv.high


def correlation_table(methods: list[str], stats: dict) -> pd.DataFrame:
    """Spearman / Kendall / Pearson between the judges' method rankings, with intervals from the shared
    hierarchical draws (every judge sees the same resampled seeds and prompts)."""
    rows = []
    for a, b in [("pool", "human"), ("gold", "human"), ("gold", "pool")]:
        if a not in stats or b not in stats:
            continue
        for name in ("spearman", "kendall", "pearson"):
            est, lo, hi = rank_agreement(stats[a], stats[b], name)
            rows.append({"pair": f"{a} vs {b}", "statistic": name, "value": est, "ci_low": lo, "ci_high": hi,
                         "n_models": len(methods), "interval": "percentile, hierarchical bootstrap (seeds, then "
                                                               "prompts), widened to the estimate if needed"})
    return pd.DataFrame(rows)


# ----- over-optimisation -----

def gold_wins(quality, records: list[dict], baseline: list[dict], texts: list[str]) -> list[float]:
    """Per record 1 / 0.5 / 0 as the text's gold quality beats / ties / loses to the baseline's."""
    base = {(b["instruction"], b.get("input", "")): b["output"] for b in baseline}
    wins = []
    for r, t in zip(records, texts):
        key = (r["instruction"], r.get("input", ""))
        qb, qm = quality(*key, base[key]), quality(*key, t)
        wins.append(1.0 if qm > qb else 0.5 if qm == qb else 0.0)
    return wins


def overoptimisation(run, rm: str) -> dict:
    """Best-of-n: proxy reward and gold win rate vs n. PPO: proxy reward and gold win rate per checkpoint (seed 0).
    Each point has the gold win rate's SE over prompts (`gold_se`)."""
    from farm.io import write_records

    if run.world is None:
        return {"skipped": "needs a world's gold judge"}
    rows = []
    base_recs = read_records(run.p("data", "baseline_outputs.json"))
    recs = read_records(run.p("data", "eval.json"))

    def gold_win(texts):
        w = np.array(gold_wins(run.world.quality, recs, base_recs, texts))
        return {"gold_win_rate": 100 * w.mean(), "gold_se": 100 * w.std(ddof=1) / np.sqrt(len(w))}

    cand_path = run.p("outputs", "best_of_n_candidates.jsonl")
    if cand_path.exists():
        cands = read_records(cand_path)
        n = max(c["j"] for c in cands) + 1
        grid = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n]
        for k in grid:
            best = [max(cands[i * n:i * n + k], key=lambda c: c["proxy_reward"]) for i in range(len(recs))]
            rows.append({"method": "best_of_n", "x_name": "n", "x": k,
                         "proxy_reward": float(np.mean([c["proxy_reward"] for c in best])),
                         **gold_win([c["output"] for c in best])})
        if "best_of_n_judge" in run.cfg.methods:
            for k in grid:
                rows.append({"method": "best_of_n_judge", "x_name": "n", "x": k, "proxy_reward": None,
                             **gold_win(run.judge_knockout(recs, cands, n, k))})
    curve = run.p("outputs", "ppo_checkpoints.jsonl")  # written by the ppo row (in its worker): see ppo_curve
    for r in read_records(curve) if curve.exists() else []:
        rows.append({"method": "ppo", "x_name": "step", "x": r["step"], "kl": r.get("kl"),
                     "proxy_reward": r["proxy_reward"], **gold_win(r["outputs"])})
    write_records(run.p("overoptimisation.json"), rows)
    return {"points": len(rows)}


def ppo_curve(run, rm: str) -> str:
    """outputs/ppo_checkpoints.jsonl: PPO's eval outputs and mean proxy reward at the SFT start and at each saved
    checkpoint (seed 0), for the over-optimisation curve; run right after PPO trains, in the same process."""
    from farm.io import write_records
    from farm.methods.scorers import RewardModelScorer
    from farm.run_config import SEED_OFFSETS

    ck_dir = run.p("models", "ppo", "checkpoints")
    ckpts = sorted(ck_dir.glob("step_*"), key=lambda p: int(p.name[5:])) if ck_dir.exists() else []
    recs = read_records(run.p("data", "eval.json"))
    scorer = RewardModelScorer(rm, style=run.cfg.policy.style, device=run.cfg.policy.device)
    kl_by_step = {}
    if run.p("models", "ppo", "metrics.jsonl").exists():
        kl_by_step = {int(r.get("step", -1)): r.get("kl") for r in read_records(run.p("models", "ppo", "metrics.jsonl"))}
    rows = []
    for ck in [run.p("models", "sft", "model")] + ckpts:
        step = 0 if ck.name == "model" else int(ck.name[5:])
        texts = run.sample(str(ck), recs, temperature=run.cfg.policy.eval_temperature,
                           seed=run.cfg.seed + SEED_OFFSETS["eval"])
        rows.append({"step": step, "kl": kl_by_step.get(step, 0.0 if step == 0 else None),
                     "proxy_reward": float(np.mean(scorer.score(recs, texts))), "outputs": texts})
    return str(write_records(run.p("outputs", "ppo_checkpoints.jsonl"), rows))


# ----- report.md -----

def write_report(run) -> dict:
    """report.md and figures/*.png of a finished run."""
    from farm.eval import report_figures as figs
    from farm.io import atomic_write_text

    d = run.p("figures")
    d.mkdir(exist_ok=True)
    lb = pd.read_csv(run.p("leaderboard.csv"), index_col=0)
    paired = pd.read_csv(run.p("paired_vs_sft.csv")) if run.p("paired_vs_sft.csv").exists() else None
    corr = pd.read_csv(run.p("correlation.csv")) if run.p("correlation.csv").exists() else None
    written = [figs.winrates(lb, d / "winrates.png")]
    if paired is not None:
        written.append(figs.forest(paired, list(lb.index), d / "paired_vs_sft.png"))
    written.append(figs.pool_vs_human(lb, corr, d / "pool_vs_human.png"))
    oo = read_records(run.p("overoptimisation.json")) if run.p("overoptimisation.json").exists() else []
    if oo:
        sft_gold = lb.loc["sft", "gold_win_rate"] if "sft" in lb.index and "gold_win_rate" in lb else None
        written.append(figs.overoptimisation(pd.DataFrame(oo), sft_gold, d / "overoptimisation.png"))
    from farm.eval.report_text import render_report

    atomic_write_text(run.p("report.md"), render_report(run, lb, paired, corr, oo))
    return {"report": str(run.p("report.md")), "figures": [str(Path(w).relative_to(run.dir)) for w in written]}


def readme_rows(run_dir: str | Path) -> dict[str, Any]:
    """The numbers of the README's quickstart table, from a finished run folder (docs/results/quickstart.json)."""
    d = Path(run_dir)
    lb = pd.read_csv(d / "leaderboard.csv", index_col=0)
    paired = pd.read_csv(d / "paired_vs_sft.csv") if (d / "paired_vs_sft.csv").exists() else None
    corr = pd.read_csv(d / "correlation.csv") if (d / "correlation.csv").exists() else None
    stages = json.loads((d / "stages.json").read_text())
    env = json.loads((d / "environment.json").read_text()) if (d / "environment.json").exists() else {}
    rows = []
    for m, r in lb.iterrows():
        row = {"method": m}
        for j in ("human", "pool", "gold"):
            if f"{j}_win_rate" in lb:
                row[j] = [round(r[f"{j}_win_rate"], 1), round(r[f"{j}_win_rate_ci_low"], 1),
                          round(r[f"{j}_win_rate_ci_high"], 1)]
        if paired is not None and m != "sft":
            for j in ("gold", "human"):
                p = paired[(paired.judge == j) & (paired.model_a == m)]
                if len(p):
                    p = p.iloc[0]
                    row[f"delta_{j}"] = [round(p["difference"], 1), round(p["ci_low"], 1), round(p["ci_high"], 1)]
        rows.append(row)
    timing = json.loads((d / "timing.json").read_text())["invocations"] if (d / "timing.json").exists() else []
    wall = sum(t["seconds"] for t in timing) if timing else sum(v.get("seconds", 0) for v in stages.values())
    out: dict[str, Any] = {"rows": rows, "n_prompts": int(stages["leaderboard"]["n_prompts"]),
                           "n_seeds": int(stages["leaderboard"]["n_seeds"]), "votes": env.get("votes", 1),
                           "wall_seconds": round(wall, 0), "invocations": len(timing),
                           "cpu_seconds": round(sum(v.get("cpu_seconds", 0) for v in stages.values()), 0),
                           "mde_80": stages["leaderboard"].get("mde_80"), "torch": env.get("torch"),
                           "threads": env.get("torch_threads"), "processor": env.get("processor"),
                           "cpu_count": env.get("cpu_count"), "workers": env.get("workers", 1),
                           "cpu_capability": env.get("cpu_capability")}
    if corr is not None:
        out["correlation"] = {f"{r.pair}": [round(r.value, 2), round(r.ci_low, 2), round(r.ci_high, 2)]
                              for r in corr.itertuples() if r.statistic == "spearman"}
    return out
