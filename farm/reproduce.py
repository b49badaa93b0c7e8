"""`farm reproduce <study>`: published simulated-vs-human figures recomputed offline from ../shared/data.

    farm reproduce pandalm              # judges and noisy pools vs 3 humans on PandaLM's 999 pairs
    farm reproduce alpaca_eval_arena    # AlpacaEval (raw and length-controlled) vs Chatbot Arena Elo
    farm reproduce alpacafarm_table2    # AlpacaFarm Table 2: simulated vs human win rates of 12 methods
    farm reproduce all --data /path/to/shared/data
    farm reproduce all --write-docs     # also save docs/results/reproduction.json and re-render its docs blocks

Each study returns a dict of DataFrames; its `summary` frame puts our number beside the published one
(`published` is NaN where the source publishes none). The notebooks in notebooks/reproduce_*.ipynb call the
same functions. docs/reproduction.md lists the numbers and explains every difference.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from farm.errors import FarmError

ARENA_COLUMN = "Arena Elo\n[Feb 2, 2024]"  # the snapshot AlpacaEval's 0.98 / 0.93 were computed against


def data_dir(path: str | os.PathLike | None = None) -> Path:
    from farm.data import shared_data_dir

    d = shared_data_dir(path)
    if d is None or (path is not None and not Path(path).is_dir()):
        raise FarmError("the real-data folder is absent", file=path,
                        hint="pass --data PATH (the folder holding pandalm/, alpaca_eval/, alpaca_farm/) or set "
                             "FARM_SHARED_DATA")
    return d


def _need(path: Path) -> Path:
    if not path.exists():
        raise FarmError("file needed by this study is missing", file=path)
    return path


def _row(figure: str, published: float, ours: float, lo: float = np.nan, hi: float = np.nan,
         note: str = "") -> dict:
    return {"figure": figure, "published": published, "ours": ours, "ci_low": lo, "ci_high": hi, "note": note}


# ----- study 1: PandaLM -----

def pandalm_pairs(humans: pd.DataFrame):
    """PandaLM's pairs as `Pair`s with id = idx (what the replay judges join on), response1 = output_1."""
    from farm.types import Pair

    return [Pair(instruction=r.instruction, input=r.input, output_1=r.output_1, output_2=r.output_2,
                 generator_1=r.generator_1, generator_2=r.generator_2, id=str(r.idx))
            for r in humans.itertuples(index=False)]


def replay_judges(data: Path) -> dict:
    """The two recorded PandaLM judges as farm annotators (the replay backend of farm/annotators)."""
    from farm.annotators import load_annotator

    return {
        "gpt-3.5-turbo": load_annotator("pandalm_gpt35_replay",
                                        files=[str(_need(data / "pandalm/gpt-3.5-turbo-testset-v1.json"))]),
        "pandalm-7b": load_annotator("pandalm_7b_replay",
                                     files=[str(_need(data / "pandalm/pandalm-7b-testset-v1.json"))]),
    }


def annotate_repeatedly(annotator, pairs, seeds: Sequence[int]) -> list[list[float | None]]:
    """One verdict list per pair: the annotator's verdict under each seed (several seeds = several draws of a
    pool's member and of its flips, which is what `variance` measures)."""
    runs = [[a.preference for a in annotator.annotate(pairs, seed=s)] for s in seeds]
    return [list(v) for v in zip(*runs)]


def noisy_pool(judges: dict, flip_rate: float):
    """AlpacaFarm-style simulated annotator: a random member per pair, then the verdict flipped with
    probability `flip_rate` (AlpacaFarm's training pool uses 25%)."""
    from farm.annotators.noise import flip
    from farm.annotators.pool import Pool

    pool = Pool("pandalm_replay_pool", list(judges.values()), [1.0] * len(judges))
    return flip(pool, flip_rate) if flip_rate > 0 else pool


def round_robin_frame(humans: pd.DataFrame, verdicts: Sequence[Sequence[float | None]]) -> pd.DataFrame:
    """Every verdict on a pair of models A (output_1) vs B (output_2) as two rows: B won with p, A with 1 − p.
    A model's mean over its rows is its round-robin win rate; instructions are the resampling unit."""
    rows = []
    for r, vs in zip(humans.itertuples(index=False), verdicts):
        for p in vs:
            p = np.nan if p is None else float(p)
            rows.append((r.instruction, r.input, r.generator_2, p))
            rows.append((r.instruction, r.input, r.generator_1, 1.0 - p))
    df = pd.DataFrame(rows, columns=["instruction", "input", "generator_2", "p_output_2"])
    df["output_1"] = df["output_2"] = df["generator_1"] = ""
    return df


def study_pandalm(data: str | os.PathLike | None = None, *, flips: Sequence[float] = (0.0, 0.1, 0.25),
                  samples: int = 4, n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Humans (leave-one-out), the GPT-3.5 and PandaLM-7B judges, and pools of the two with flip noise, against
    the human majority; the 5-model round-robin ranking of each against the humans'."""
    from farm.eval.agreement import agreement_table, human_arrays, read_humans
    from farm.eval.correlation import correlate_annotations
    from farm.eval.winrate import leaderboard

    d = data_dir(data)
    humans = read_humans(_need(d / "pandalm/testset-v1.json"))
    pairs = pandalm_pairs(humans)
    judges = replay_judges(d)
    verdicts = {name: annotate_repeatedly(j, pairs, [seed]) for name, j in judges.items()}
    for rate in flips:
        verdicts[f"pool (flip {rate:.0%})"] = annotate_repeatedly(noisy_pool(judges, rate), pairs,
                                                                  range(seed, seed + samples))
    table = agreement_table(humans, verdicts, n_boot=n_boot, seed=seed)

    human_frame = round_robin_frame(humans, [[None if np.isnan(v) else v for v in row]
                                             for row in human_arrays(humans)])
    win_rates = {"humans": leaderboard(human_frame, n_boot=0, sort_by=None)["win_rate"]}
    ranking = []
    for name, vs in verdicts.items():
        frame = round_robin_frame(humans, vs)
        win_rates[name] = leaderboard(frame, n_boot=0, sort_by=None)["win_rate"]
        corr = correlate_annotations(human_frame, frame, n_boot=n_boot, seed=seed)
        ranking.append({"judge": name, **{f"{s}{suffix}": corr.loc[s, col] for s in ("spearman", "kendall")
                                         for suffix, col in (("", "value"), ("_ci_low", "ci_low"),
                                                             ("_ci_high", "ci_high"))}})
    ranking = pd.DataFrame(ranking).set_index("judge")
    win_rates = pd.DataFrame(win_rates).sort_values("humans", ascending=False)

    gpt, panda, hum = table.loc["gpt-3.5-turbo"], table.loc["pandalm-7b"], table.loc["humans"]
    summary = [
        _row("GPT-3.5 agreement with human majority, ties a class (%)", 69.8, gpt["agreement"],
             gpt["agreement_ci_low"], gpt["agreement_ci_high"],
             f"{gpt['n_agree']:.0f}/{gpt['n_pairs']:.0f}; {gpt['n_unparsed']:.0f} unparseable counted wrong"),
        _row("PandaLM-7B agreement with human majority, ties a class (%)", 66.8, panda["agreement"],
             panda["agreement_ci_low"], panda["agreement_ci_high"], f"{panda['n_agree']:.0f}/{panda['n_pairs']:.0f}"),
        _row("humans, leave-one-out agreement (%)", np.nan, hum["agreement"], hum["agreement_ci_low"],
             hum["agreement_ci_high"], "AlpacaFarm's humans: 65.7 (other data)"),
        _row("GPT-3.5 agreement without ties (%)", np.nan, gpt["agreement_no_ties"]),
        _row("PandaLM-7B agreement without ties (%)", np.nan, panda["agreement_no_ties"]),
        _row("humans P(prefer longer)", np.nan, hum["p_prefer_longer"], note="AlpacaFarm's humans: 0.636 (other data)"),
        _row("GPT-3.5 P(prefer longer)", np.nan, gpt["p_prefer_longer"]),
        _row("PandaLM-7B P(prefer longer)", np.nan, panda["p_prefer_longer"]),
    ]
    for rate in flips:
        name = f"pool (flip {rate:.0%})"
        summary.append(_row(f"{name} agreement (%)", np.nan, table.loc[name, "agreement"],
                            table.loc[name, "agreement_ci_low"], table.loc[name, "agreement_ci_high"],
                            f"variance {table.loc[name, 'variance']:.1f}"
                            + ("; AlpacaFarm's evaluation pool: 65 (other judges, other data)" if rate == 0 else "")))
    for name in ranking.index:
        summary.append(_row(f"Spearman of 5-model ranking, {name} vs humans", np.nan, ranking.loc[name, "spearman"],
                            ranking.loc[name, "spearman_ci_low"], ranking.loc[name, "spearman_ci_high"],
                            f"Kendall {ranking.loc[name, 'kendall']:.2f}"))
    return {"summary": pd.DataFrame(summary), "agreement": table, "ranking": ranking, "win_rates": win_rates}


# ----- study 2: AlpacaEval vs Chatbot Arena -----

def study_alpaca_eval_arena(data: str | os.PathLike | None = None, *, n_boot: int = 2000,
                            seed: int = 0) -> dict[str, pd.DataFrame]:
    """Spearman of AlpacaEval (raw, LC) with Arena Elo: from the published columns, and from our recomputation
    of AlpacaEval 1 (raw and our LC) from the 20 GPT-4 annotation files; our LC against theirs."""
    from farm.eval.correlation import correlate_tables
    from farm.eval.winrate import leaderboard, read_leaderboard_csv

    d = data_dir(data)
    bench = pd.read_csv(_need(d / "alpaca_eval/benchmarks_arena_elo.csv")).dropna(subset=["Model"]).set_index("Model")
    arena = bench[ARENA_COLUMN].dropna()
    ae2 = read_leaderboard_csv(_need(d / "alpaca_eval/leaderboards/data_AlpacaEval_2/"
                                     "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"))
    ae1 = read_leaderboard_csv(_need(d / "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv"))

    def corr(values: pd.Series, se: pd.Series):
        t = pd.DataFrame({"v": values, "se": se}).dropna(subset=["v"])
        return correlate_tables(t, arena, column="v", se_column="se", n_boot=n_boot, seed=seed)

    rows, details = [], {}

    def add(figure, published, values, se, note):
        c = corr(values, se)
        details[figure] = c
        rows.append(_row(figure, published, c.loc["spearman", "value"], c.loc["spearman", "ci_low"],
                         c.loc["spearman", "ci_high"],
                         f"{int(c['n_models'].iloc[0])} models; Kendall {c.loc['kendall', 'value']:.2f}; " + note))

    # LC standard errors are not published for these models: the raw win rate's SE stands in (LC SEs, where
    # AlpacaEval gives them, are 3-6x smaller, so these LC intervals are conservative)
    add("Spearman(LC AlpacaEval 2.0, Arena)", 0.98, bench["LC AlpacaEval 2.0"], ae2["standard_error"],
        "published column; interval: raw SE standing in for LC SE, Elo fixed")
    add("Spearman(AlpacaEval 2.0, Arena)", 0.93, bench["AlpacaEval 2.0"], ae2["standard_error"],
        "published column; interval from SEs, Elo fixed")
    add("Spearman(AlpacaEval 1.0, Arena)", np.nan, bench["AlpacaEval 1.0"], ae1["standard_error"], "published column")

    files = sorted((d / "alpaca_eval/annotations_alpaca_eval_gpt4").glob("*.json.gz"))
    if not files:
        raise FarmError("no AlpacaEval 1 annotation files", file=d / "alpaca_eval/annotations_alpaca_eval_gpt4")
    ours = leaderboard(files, n_boot=0, lc=True)
    common = ours.index.intersection(arena.index)
    add("Spearman(our AlpacaEval 1 raw, Arena)", np.nan, ours.loc[common, "win_rate"],
        ours.loc[common, "standard_error"], "recomputed from the annotation files (exact model names only)")
    add("Spearman(their AlpacaEval 1 LC, Arena)", np.nan, ae1.reindex(common)["length_controlled_winrate"],
        ours.loc[common, "standard_error"], "same models, AlpacaEval's LC; raw SE stands in for LC SE")
    add("Spearman(our AlpacaEval 1 LC, Arena)", np.nan, ours.loc[common, "length_controlled_winrate"],
        ours.loc[common, "lc_standard_error"], "same models, our LC; interval from our LC SEs")

    lc = {}
    for name, theirs_table, folder in (("AlpacaEval 1", ae1, "annotations_alpaca_eval_gpt4"),
                                       ("AlpacaEval 2", ae2, "annotations_weighted_gpt4_turbo")):
        fs = sorted((d / "alpaca_eval" / folder).glob("*.json.gz"))
        ours_lc = ours if folder.endswith("gpt4") else leaderboard(fs, n_boot=0, lc=True)
        both = pd.DataFrame({"raw": ours_lc["win_rate"], "ours": ours_lc["length_controlled_winrate"],
                             "theirs": theirs_table.reindex(ours_lc.index)["length_controlled_winrate"]}).dropna()
        both["difference"] = both["ours"] - both["theirs"]
        lc[name] = both
        from scipy.stats import spearmanr

        rows.append(_row(f"{name}: Spearman(our LC, their LC)", np.nan, spearmanr(both["ours"], both["theirs"]).statistic,
                         note=f"{len(both)} models; mean |difference| {both['difference'].abs().mean():.2f} points, "
                              f"largest {both['difference'].abs().max():.1f}"))
    out = {"summary": pd.DataFrame(rows), "lc_alpaca_eval_1": lc["AlpacaEval 1"],
           "lc_alpaca_eval_2": lc["AlpacaEval 2"]}
    out.update({f"corr: {k}": v for k, v in details.items()})
    return out


# ----- study 3: AlpacaFarm Table 2 -----

def study_alpacafarm_table2(data: str | os.PathLike | None = None, *, n_boot: int = 5000,
                            seed: int = 0) -> dict[str, pd.DataFrame]:
    """Simulated vs human win rates of AlpacaFarm's methods (Table 2): Spearman, Kendall, Pearson, R², each
    with a parametric interval drawing every win rate from Normal(win rate, SE) on both sides."""
    from farm.eval.correlation import correlate_tables

    d = data_dir(data)
    t = pd.read_csv(_need(d / "alpaca_farm/paper_table2_winrates.csv")).set_index("method")
    both = t.dropna(subset=["simulated_win_rate", "human_win_rate"])
    sim = both.rename(columns={"simulated_win_rate": "win_rate", "simulated_se": "standard_error"})
    hum = both.rename(columns={"human_win_rate": "win_rate", "human_se": "standard_error"})
    c = correlate_tables(sim, hum, n_boot=n_boot, seed=seed)
    n = int(c["n_models"].iloc[0])
    rows = [_row("Spearman(simulated, human)", 0.98, c.loc["spearman", "value"], c.loc["spearman", "ci_low"],
                 c.loc["spearman", "ci_high"], f"{n} methods with both; interval from both columns' SEs"),
            _row("R² (Pearson²) of human on simulated", 0.87, c.loc["r2", "value"], c.loc["r2", "ci_low"],
                 c.loc["r2", "ci_high"], f"Pearson {c.loc['pearson', 'value']:.3f}"),
            _row("Kendall(simulated, human)", np.nan, c.loc["kendall", "value"], c.loc["kendall", "ci_low"],
                 c.loc["kendall", "ci_high"])]
    return {"summary": pd.DataFrame(rows), "correlations": c, "table2": t}


def study_live(data: str | os.PathLike | None = None, *, annotator: str = "", limit: int = 200, seed: int = 0,
               n_boot: int = 1000, cache: str | os.PathLike | None = "runs/reproduce_live.sqlite",
               concurrency: int | None = None) -> dict[str, pd.DataFrame]:
    """Study 5: the PandaLM study with any judge folder (API, local server, local model) on the first `limit`
    pairs, beside the recorded GPT-3.5 verdicts on the same pairs. Cached: a re-run makes no requests."""
    from farm.annotators import annotate_pairs, load_annotator
    from farm.eval.agreement import agreement_table, read_humans

    if not annotator:
        raise FarmError("study 'live' needs a judge", field="annotator",
                        hint="farm reproduce live --annotator gpt4o_mini_basic (or any folder in annotator_prompts/)")
    d = data_dir(data)
    humans = read_humans(_need(d / "pandalm/testset-v1.json"))
    if limit:
        humans = humans.iloc[:limit].reset_index(drop=True)
    pairs = pandalm_pairs(humans)
    judge = load_annotator(annotator)
    anns = annotate_pairs(pairs, judge, seed=seed, cache_path=cache, progress=True, concurrency=concurrency)
    verdicts = {annotator: [[a.preference] for a in anns],
                "gpt-3.5-turbo (recorded)": annotate_repeatedly(replay_judges(d)["gpt-3.5-turbo"], pairs, [seed])}
    table = agreement_table(humans, verdicts, n_boot=n_boot, seed=seed)
    summary = [_row(f"{name}: agreement with the human majority (%), {len(pairs)} pairs", np.nan,
                    float(table.loc[name, "agreement"]), note="ties as a class")
               for name in verdicts]
    return {"summary": pd.DataFrame(summary), "agreement": table}


def study_world_noise(data=None, **kwargs) -> dict[str, pd.DataFrame]:
    """Study 4 (synthetic world, no real data needed): see farm/reproduce_world.py."""
    from farm.reproduce_world import study_world_noise as study

    return study(data, **{k: v for k, v in kwargs.items() if k != "n_boot"})


def study_pool_ablation(data=None, **kwargs) -> dict[str, pd.DataFrame]:
    """Study 5 (a finished compare run): which eval-pool property breaks tracking of the simulated humans; see
    farm/reproduce_pool.py."""
    from farm.reproduce_pool import study_pool_ablation as study

    return study(data, **kwargs)


STUDIES: dict[str, Callable[..., dict[str, pd.DataFrame]]] = {
    "pandalm": study_pandalm,
    "alpaca_eval_arena": study_alpaca_eval_arena,
    "alpacafarm_table2": study_alpacafarm_table2,
    "world_noise": study_world_noise,
    "pool_ablation": study_pool_ablation,
    "live": study_live,
}


def format_summary(summary: pd.DataFrame) -> str:
    def num(v: float) -> str:
        return "—" if pd.isna(v) else (f"{v:.3f}" if abs(v) <= 1 else f"{v:.1f}")

    lines = [f"{'figure':<62} {'published':>9} {'ours':>8} {'95% interval':>17}  note"]
    for r in summary.itertuples(index=False):
        interval = "" if pd.isna(r.ci_low) else f"[{num(r.ci_low)}, {num(r.ci_high)}]"
        lines.append(f"{r.figure:<62} {num(r.published):>9} {num(r.ours):>8} {interval:>17}  {r.note}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import time

    from farm import reproduce_docs

    p = argparse.ArgumentParser(prog="farm reproduce", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=[*STUDIES, "all"])
    p.add_argument("--data", help="the real-data folder (default: $FARM_SHARED_DATA or ../shared/data)")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default per study)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--details", action="store_true", help="also print every table behind the summary")
    p.add_argument("--annotator", default="", help="study 'live': the judge folder to evaluate (needs its key/server)")
    p.add_argument("--limit", type=int, default=200, help="study 'live': how many PandaLM pairs (0 = all 999)")
    p.add_argument("--run", default=None, help="studies 'world_noise' and 'pool_ablation': an existing `farm compare` "
                                               "run folder")
    p.add_argument("--write-docs", action="store_true",
                   help="save the figures (docs/results/reproduction.json; pool_ablation: docs/results/"
                        "pool_ablation.json) and re-render the docs blocks made from them")
    args = p.parse_args(argv)
    # all = the studies on the real data (1–3); world_noise and pool_ablation train or need a compare run
    names = ["pandalm", "alpaca_eval_arena", "alpacafarm_table2"] if args.study == "all" else [args.study]
    for name in names:
        kwargs = {"seed": args.seed} | ({"n_boot": args.n_boot} if args.n_boot is not None else {})
        if name == "live":
            kwargs |= {"annotator": args.annotator, "limit": args.limit}
        if name in ("world_noise", "pool_ablation") and args.run:
            kwargs["run"] = args.run
        t0 = time.time()
        result = STUDIES[name](args.data, **kwargs)
        print(f"== {name} ==\n{format_summary(result['summary'])}\n")
        if args.write_docs and name in reproduce_docs.STUDY_LABELS:
            extra = {"annotator": args.annotator, "limit": args.limit} if name == "live" else {}
            for line in reproduce_docs.write(name, result, seed=args.seed, n_boot=args.n_boot,
                                             seconds=time.time() - t0, **extra):
                print(f"wrote {reproduce_docs.SOURCE} and {line}")
        if args.write_docs and name == "pool_ablation":
            from farm import docblocks
            from farm.reproduce_pool import docs_data

            doc = docblocks.write_block(docblocks.ROOT / "docs" / "compare.md", "pool-ablation",
                                        docs_data(result, args.run or "runs/quickstart"),
                                        "docs/results/pool_ablation.json", "farm.reproduce_pool:markdown")
            print(f"wrote {doc} block 'pool-ablation' and docs/results/pool_ablation.json")
        if args.details:
            with pd.option_context("display.width", 250, "display.max_columns", 30):
                for key, frame in result.items():
                    if key != "summary":
                        print(f"-- {key} --\n{frame.round(3).to_string()}\n")
    return 0
