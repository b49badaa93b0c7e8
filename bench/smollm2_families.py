"""Gold quality per task family: the pretrained SmolLM2-135M-Instruct policy (configs/smollm2_cpu.yaml) beside the
0.3M-parameter quickstart policy (configs/quickstart.yaml), from their finished `farm compare` run folders (#20).

    python bench/smollm2_families.py --smollm2 runs/smollm2_cpu --quickstart runs/quickstart [--write-docs]

For each run: the baseline's, the untrained policy's (SmolLM2 only: sampled here once, with the run's eval seed and
temperature, into RUN/families/init.json) and every method's mean gold quality per family (seeds averaged), the
share of answers gold scores 0 (no answer of the asked shape: prose instead of the task), and each method's gold
win rate with its interval from RUN/leaderboard.csv. `--write-docs` saves docs/results/smollm2_families.json and
re-renders the `smollm2_families` block of docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCE = "docs/results/smollm2_families.json"


def untrained_outputs(run_dir: Path) -> list[dict] | None:
    """The run's initial policy sampled on its eval prompts (cached in RUN/families/init.json); None for a run whose
    initial policy is built from scratch (an untrained tiny model answers nothing)."""
    from farm.config import load_config
    from farm.io import read_records, write_records
    from farm.run import CompareRun
    from farm.run_config import SEED_OFFSETS, CompareConfig

    path = run_dir / "families" / "init.json"
    if path.exists():
        return read_records(path)
    cfg = load_config(CompareConfig, run_dir / "config.yaml")
    if not cfg.policy.path:
        return None
    run = CompareRun(cfg, log=lambda s: None, worker=True)  # reads the folder's config; writes nothing of the run's
    init = json.loads((run_dir / "stages.json").read_text())["init_model"]["model"]
    recs = read_records(run_dir / "data" / "eval.json")
    texts = run.sample(init, recs, temperature=cfg.policy.eval_temperature, seed=cfg.seed + SEED_OFFSETS["eval"])
    outs = [{**r, "output": t} for r, t in zip(recs, texts)]
    write_records(path, outs)
    return outs


def gold_by_family(records: list[dict], keys: set | None = None) -> dict:
    """Mean gold quality per family (and overall, and the share of zeros) of the records whose (instruction, input)
    is in `keys` (all when None)."""
    from farm.worlds.tasks import quality

    fams: dict[str, list[float]] = {}
    for r in records:
        if keys is not None and (r["instruction"], r.get("input", "")) not in keys:
            continue
        fams.setdefault(r["family"], []).append(quality(r["instruction"], r.get("input", ""), r["output"]))
    scores = [q for qs in fams.values() for q in qs]
    return {"families": {f: sum(qs) / len(qs) for f, qs in fams.items()}, "mean": sum(scores) / len(scores),
            "zero_share": sum(q == 0 for q in scores) / len(scores), "n": len(scores)}


def shared_win_rates(run_dir: Path, keys: set) -> dict[str, float]:
    """Gold win rate (%) of every row against the baseline on the prompts in `keys` only, seeds averaged (gold is
    exact: no interval needed to compare two runs on the same prompts)."""
    by_row: dict[str, list[float]] = {}
    for line in (run_dir / "annotations" / "gold.jsonl").read_text().splitlines():
        a = json.loads(line)
        if (a["instruction"], a.get("input", "")) in keys and a.get("p_output_2") is not None:
            by_row.setdefault(a["generator_2"].split("@")[0], []).append(a["p_output_2"])
    return {m: 100 * sum(v) / len(v) for m, v in by_row.items()}


def summarise(run_dir: Path, label: str, keys: set) -> dict:
    """One run's rows (baseline, untrained policy, methods) on the eval prompts in `keys`, with the leaderboard's
    gold win rates and intervals on the run's whole eval set."""
    import pandas as pd

    from farm.io import read_records

    cfg = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "config.yaml").read_text())))
    rows: dict[str, dict] = {"baseline": gold_by_family(read_records(run_dir / "data" / "baseline_outputs.json"),
                                                        keys)}
    init = untrained_outputs(run_dir)
    if init is not None:
        rows["untrained"] = gold_by_family(init, keys)
    shared = shared_win_rates(run_dir, keys)
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("method")
    for m in cfg["methods"]:
        files = sorted((run_dir / "outputs").glob(f"{m}.json")) + sorted((run_dir / "outputs").glob(f"{m}@s*.json"))
        per_seed = [gold_by_family(read_records(f), keys) for f in files]
        fams = {f: sum(s["families"][f] for s in per_seed) / len(per_seed) for f in per_seed[0]["families"]}
        rows[m] = {"families": fams, "mean": sum(s["mean"] for s in per_seed) / len(per_seed),
                   "zero_share": sum(s["zero_share"] for s in per_seed) / len(per_seed), "n": per_seed[0]["n"],
                   "seeds": len(per_seed), "gold_win_rate_shared": shared.get(m)}
        if m in board.index:
            b = board.loc[m]
            rows[m].update(gold_win_rate=float(b["gold_win_rate"]), gold_ci=[float(b["gold_win_rate_ci_low"]),
                                                                               float(b["gold_win_rate_ci_high"])],
                           pool_win_rate=float(b["pool_win_rate"]), human_win_rate=float(b["human_win_rate"]))
    timing = json.loads((run_dir / "timing.json").read_text()) if (run_dir / "timing.json").exists() else {}
    env = json.loads((run_dir / "environment.json").read_text()) if (run_dir / "environment.json").exists() else {}
    return {"label": label, "config": cfg.get("run_dir", ""), "policy": cfg["policy"].get("path") or "tiny (0.3M)",
            "eval_prompts": cfg["world"]["sizes"]["eval"], "method_seeds": cfg.get("method_seeds", 1),
            "votes": cfg.get("votes", 1), "rows": rows,
            "seconds": sum(i["seconds"] for i in timing.get("invocations", [])),
            "cpu_count": env.get("cpu_count"), "workers": env.get("workers")}


def spread(run: dict) -> dict:
    """Gold win rates of the methods: max − min on the run's whole eval set, the widest interval's half-width there,
    and max − min on the shared prompts."""
    rates = [r for r in run["rows"].values() if "gold_win_rate" in r]
    wr = [r["gold_win_rate"] for r in rates]
    shared = [r["gold_win_rate_shared"] for r in rates if r.get("gold_win_rate_shared") is not None]
    return {"range": max(wr) - min(wr), "half_width": max((r["gold_ci"][1] - r["gold_ci"][0]) / 2 for r in rates),
            "range_shared": max(shared) - min(shared)}


def markdown(d: dict) -> str:
    runs, fams, n = d["runs"], d["families"], d["shared_prompts"]
    out = [f"Gold quality per family on the same {n} eval prompts (the SmolLM2 run's eval set, the first of the "
           "quickstart's), mean over prompts, 0–1, seeds averaged; `python bench/smollm2_families.py --write-docs`, "
           f"load average {d['load_avg'][0]:.1f} / {d['load_avg'][1]:.1f} (1 / 5 min) when it ran", "",
           "| run | row | " + " | ".join(fams) + " | mean | gold = 0 |", "|---|---|" + "---|" * (len(fams) + 2)]
    for run in runs:
        for name, r in run["rows"].items():
            cells = " | ".join(f"{r['families'][f]:.2f}" if f in r["families"] else "—" for f in fams)
            out.append(f"| {run['label']} | {name} | {cells} | {r['mean']:.2f} | {100 * r['zero_share']:.0f}% |")
    out += ["", f"Gold win rate against the baseline (%): on the shared {n} prompts, and on each run's whole eval "
            "set with its 95% interval (seeds, then prompts); how far the methods spread:", "",
            "| run | eval prompts × seeds | " + " | ".join(d["methods"])
            + f" | max − min ({n} shared) | max − min (whole set) | widest ± (whole set) |",
            "|---|---|" + "---|" * (len(d["methods"]) + 3)]
    for run in runs:
        cells = []
        for m in d["methods"]:
            r = run["rows"].get(m)
            cells.append(f"{r['gold_win_rate_shared']:.1f}; {r['gold_win_rate']:.1f} [{r['gold_ci'][0]:.1f}, "
                         f"{r['gold_ci'][1]:.1f}]" if r and "gold_win_rate" in r else "—")
        s = spread(run)
        out.append(f"| {run['label']} | {run['eval_prompts']} × {run['method_seeds']} | " + " | ".join(cells)
                   + f" | {s['range_shared']:.1f} | {s['range']:.1f} | {s['half_width']:.1f} |")
    out += ["", "Wall time of each run: " + "; ".join(
        f"{run['label']} {run['seconds'] / 60:.1f} min ({run['workers']} worker(s), {run['cpu_count']} CPUs)"
        for run in runs)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", default="runs/smollm2_cpu", help="finished run of configs/smollm2_cpu.yaml")
    ap.add_argument("--quickstart", default="runs/quickstart", help="finished run of configs/quickstart.yaml")
    ap.add_argument("--write-docs", action="store_true", help="save the JSON and re-render docs/scaling.md's block")
    args = ap.parse_args(argv)
    from farm.io import read_records

    # the SmolLM2 run's eval prompts are the first of the quickstart's (same world seed): both are compared on them
    keys = {(r["instruction"], r.get("input", "")) for r in read_records(Path(args.smollm2) / "data" / "eval.json")}
    runs = [summarise(Path(args.quickstart), "quickstart (0.3M, from scratch)", keys),
            summarise(Path(args.smollm2), "SmolLM2-135M-Instruct", keys)]
    fams = sorted({f for run in runs for r in run["rows"].values() for f in r["families"]})
    methods = [m for m in dict.fromkeys(m for run in runs for m, r in run["rows"].items() if "gold_win_rate" in r)]
    data = {"runs": runs, "families": fams, "methods": methods, "load_avg": list(os.getloadavg()[:2]),
            "shared_prompts": len(keys)}
    print(markdown(data))
    if args.write_docs:
        from farm.docblocks import write_block

        write_block(ROOT / "docs" / "scaling.md", "smollm2_families", data, SOURCE, "bench.smollm2_families:markdown")
    return data


if __name__ == "__main__":
    main()
