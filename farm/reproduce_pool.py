"""`farm reproduce pool_ablation --run runs/quickstart`: which property of the simulated eval pool keeps it from
ranking a run's methods the way the simulated humans do?

The eval pool's members differ from the simulated human in five ways (farm/annotators/synthetic.py): a stronger
taste for length, another position bias, skimming (on a share of pairs correctness is not checked), a persistent
per-pair opinion, and a different sharpness (β). Each variant below sets ONE of these, in every member, to the
human's value, re-judges the run's own eval pairs (the same outputs, no retraining), and measures the Spearman
correlation of its method ranking with the humans' (95% interval over the run's seeds, then prompts). A second,
independent simulated human is the ceiling: the agreement that noise alone allows. Nothing is fitted: the
variants are the human's published-calibrated values (PRESETS["human"]), and the world is left as it is.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

PROPERTIES = ("length", "position", "attention", "opinion", "beta")
LABELS = {"length": "length bias as the human's", "position": "position bias as the human's",
          "attention": "no skimming (attention 1, as the human)", "opinion": "no persistent opinion (as the human)",
          "beta": "sharpness β as the human's"}


def _variants(quality_fn, seed: int, votes: int) -> dict[str, object]:
    """label → a function vote → annotator. The pools are the same for every vote (another member is drawn per
    pair with the vote's seed); the second human is `votes` other people than the run's."""
    from farm.annotators.synthetic import PRESETS, SyntheticJudge, SyntheticPool, make_annotator, pool_members

    human = PRESETS["human"]
    members = pool_members(quality_fn)

    def pool(name: str, keys: tuple[str, ...]):
        p = SyntheticPool(name, [SyntheticJudge(m.name, m.quality_fn,
                                                replace(m.params, **{k: getattr(human, k) for k in keys}))
                                 for m in members])
        return lambda vote: p

    out = {"eval pool (as shipped)": pool("eval_pool", ())}
    out.update({LABELS[k]: pool(f"eval_pool-{k}", (k,)) for k in PROPERTIES})
    out["every property as the human's"] = pool("eval_pool-all", PROPERTIES)
    out["a second simulated human (the ceiling)"] = lambda vote: make_annotator("human", quality_fn,
                                                                                seed=seed + votes + vote)
    return out


def study_pool_ablation(data=None, *, run: str | Path | None = None, seed: int = 0, n_boot: int = 1000
                        ) -> dict[str, pd.DataFrame]:
    """Spearman (pool variant vs the run's simulated human) per variant, with intervals; and vs gold."""
    from farm.config import load_config
    from farm.errors import FarmError
    from farm.eval.report import method_stats, preference_array, rank_agreement
    from farm.io import read_pairs, write_annotations
    from farm.run_config import CompareConfig
    from farm.worlds import WORLDS

    d = Path(run or "runs/quickstart")
    if not (d / "annotations" / "human.jsonl").exists():
        raise FarmError("pool_ablation needs a finished farm compare run on a world", file=d,
                        hint="farm compare configs/quickstart.yaml, then --run runs/quickstart")
    cfg = load_config(CompareConfig, d / "config.yaml")
    if not cfg.world.name:
        raise FarmError("pool_ablation needs a run on a world (its gold quality)", file=d / "config.yaml")
    import importlib

    quality_fn = importlib.import_module(WORLDS[cfg.world.name]).quality_parts
    methods, S = list(cfg.methods), cfg.method_seeds
    pairs = read_pairs(d / "annotations" / "human.jsonl")
    ref = {j: method_stats(preference_array(d / "annotations" / f"{j}.jsonl", methods, S)[0], n_boot, cfg.seed)
           for j in ("human", "gold")}
    out_dir = d / "pool_ablation"
    rows = []
    for label, make in _variants(quality_fn, cfg.seed, cfg.votes).items():
        runs = [make(v).annotate(pairs, seed=cfg.seed + v) for v in range(cfg.votes)]  # as the run's `votes`
        anns = [replace(a[0], preference=float(np.mean([x.preference for x in a]))) for a in zip(*runs)]
        path = out_dir / f"{make(0).name}-{label.split(' ')[0]}.jsonl"
        write_annotations(path, anns)
        st = method_stats(preference_array(path, methods, S)[0], n_boot, cfg.seed)  # the run's draws
        for against in ("human", "gold"):
            rho, lo, hi = rank_agreement(st, ref[against])
            rows.append({"variant": label, "against": against, "spearman": rho, "ci_low": lo, "ci_high": hi,
                         "mean_win_rate": float(np.mean(st["point"]))})
    table = pd.DataFrame(rows)
    vs_h = table[table.against == "human"].set_index("variant")
    summary = pd.DataFrame([{"figure": f"Spearman vs simulated human: {v}", "published": np.nan,
                             "ours": r.spearman, "ci_low": r.ci_low, "ci_high": r.ci_high,
                             "note": f"{len(methods)} methods, {S} seed(s), {cfg.votes} vote(s)"}
                            for v, r in vs_h.iterrows()])
    return {"summary": summary, "ablation": table}


def markdown(data: dict) -> str:
    """The docs block of `farm reproduce pool_ablation --run RUN --write-docs` (docs/results/pool_ablation.json)."""
    lines = [f"Run `{data['run']}`: {data['n_methods']} methods × {data['n_seeds']} seeds × {data['votes']} votes, "
             f"{data['n_prompts']} eval prompts; Spearman of each variant's method ranking with the simulated "
             "humans' (and with gold), 95% interval over seeds, then prompts.", "",
             "| eval-pool variant | vs simulated human | vs gold |", "|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['variant']} | {r['human'][0]:.2f} [{r['human'][1]:.2f}, {r['human'][2]:.2f}] | "
                     f"{r['gold'][0]:.2f} [{r['gold'][1]:.2f}, {r['gold'][2]:.2f}] |")
    shipped, *variants = data["rows"]
    ceiling = variants[-1]
    above = [r["variant"] for r in variants[:-1] if r["human"][1] > shipped["human"][0]]
    lines += ["", f"The shipped pool against a second set of simulated people: {shipped['human'][0]:.2f} vs "
              f"{ceiling['human'][0]:.2f}"
              + (" (the ceiling's interval excludes the pool's estimate: the pool falls short of what noise allows)."
                 if ceiling["human"][1] > shipped["human"][0] else
                 " (the ceiling's interval includes the pool's estimate: at this run's power the pool cannot be told"
                 " apart from other humans)."),
              "Variants whose whole interval lies above the shipped pool's estimate (the property that, made "
              "human, clearly improves agreement): " + (", ".join(above) if above else
                                                          "none at this run's power") + "."]
    return "\n".join(lines)


def docs_data(result: dict, run: str | Path) -> dict:
    """The JSON behind `markdown`, from `study_pool_ablation`'s result."""
    import json

    from farm.config import load_config
    from farm.run_config import CompareConfig

    cfg = load_config(CompareConfig, Path(run) / "config.yaml")
    stages = json.loads((Path(run) / "stages.json").read_text())
    t = result["ablation"]
    rows = []
    for v in dict.fromkeys(t["variant"]):
        cell = {a: [round(float(x), 3) for x in t[(t.variant == v) & (t.against == a)][["spearman", "ci_low",
                                                                                          "ci_high"]].iloc[0]]
                for a in ("human", "gold")}
        rows.append({"variant": v, **cell})
    return {"run": Path(run).name, "n_methods": len(cfg.methods), "n_seeds": cfg.method_seeds, "votes": cfg.votes,
            "n_prompts": int(stages["leaderboard"]["n_prompts"]), "rows": rows}
