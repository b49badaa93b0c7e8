"""Noise study: does a noise-robust DPO loss matter at AlpacaFarm's label-noise level? DPO vs robust DPO vs cDPO
trained on the same SFT policy's pairs, labelled by the simulated pool with an extra flip rate of 0 / 10 / 25 / 40 %,
scored by the world's GOLD quality against the baseline and paired with plain DPO at the same flip rate.

    python bench/bench_noise_study.py [--run RUN_DIR] [--flips 0 0.1 0.25 0.4] [--seed 0] [--train-seeds K]

Without `--run` it first runs `farm compare configs/quickstart.yaml methods=[sft]` into
runs/noise_study_seed<seed> (the world's splits, the SFT policy, its two samples per preference prompt); with
`--run` it reuses any compare run folder that has data/pairs.jsonl and models/sft/model. Per flip rate ε the pairs
are labelled by `chain(eval_pool, flip(ε))` (the pool's judges without their own 25 % flip, then ε; verdicts cached
in the run's cache.sqlite), and each loss trains with farm compare's DPO settings (β 0.1, lr 1e-4, 2 epochs of 32
pairs); robust DPO and cDPO are told the true ε (`label_smoothing` = ε; at ε = 0 both ARE DPO, so those rows reuse
DPO's model). Each loss is trained with K training seeds (default: the run's `method_seeds`; seed k trains with
seed + 1000 k and samples with seed + 7 + 1000 k, as `farm compare` does). Eval: one sample per eval prompt and
training seed at temperature 0.7, the same sampling seed for every loss; gold win (1 / ½ / 0) against the
baseline's output, averaged over the K seeds per prompt; Δ vs DPO = the paired difference over the same prompts
(DPO's own row: DPO vs the SFT start, so the table shows how far DPO moves the policy at all)
(`farm.eval.stats.paired_comparison`: paired SE and 95 % bootstrap interval). Also the share of training labels
that agree with gold at each ε, and a reading line: where a robust loss's interval excludes 0. Writes
bench/results/noise_study.json and the blocks in bench/RESULTS.md and
docs/methods/dpo.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path

import numpy as np

from farm.run_config import METHOD_SEED_STRIDE, SEED_OFFSETS, seeded

ROOT = Path(__file__).resolve().parent.parent
LOSSES = ("sigmoid", "robust", "cdpo")
USED: set[str] = set()  # the DPO model folders this invocation sampled from
TRAINED: list[str] = []  # those it trained (the others were reused from the run folder)


def prepare_run(seed: int) -> Path:
    from farm.run import compare

    run_dir = ROOT / "runs" / f"noise_study_seed{seed}"
    compare(ROOT / "configs" / "quickstart.yaml", [f"run_dir={run_dir}", f"seed={seed}", "methods=[sft]",
                                                   "progress=false"], log=print)
    return run_dir


def world_of(run_dir: Path):
    """The run's world, rebuilt from its saved config (same seed, options and split sizes)."""
    import yaml

    from farm.worlds import WORLDS

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    w = cfg["world"]
    return importlib.import_module(WORLDS[w["name"]]).build(cfg["seed"], **w.get("options", {}), **w["sizes"])


def gold_wins(world, records: list[dict], baseline: dict, texts: list[str]) -> np.ndarray:
    """Per prompt 1 / ½ / 0 as the text's gold quality beats / ties / loses to the baseline's output."""
    q = np.array([world.quality(r["instruction"], r.get("input", ""), t) for r, t in zip(records, texts)])
    qb = np.array([world.quality(r["instruction"], r.get("input", ""), baseline[(r["instruction"], r.get("input", ""))])
                   for r in records])
    return np.where(q > qb, 1.0, np.where(q == qb, 0.5, 0.0))


def label_agreement(world, anns) -> float:
    """Share of decided training labels whose preferred output is also gold's preferred output (gold ties skipped)."""
    agree = []
    for a in anns:
        if a.preference is None or a.preference == 0.5:
            continue
        p = a.pair
        g1, g2 = (world.quality(p.instruction, p.input, o) for o in (p.output_1, p.output_2))
        if g1 != g2:
            agree.append((a.preference > 0.5) == (g2 > g1))
    return float(np.mean(agree)) if agree else float("nan")


def train_and_sample(run_dir: Path, prefs: Path, out: Path, loss: str, eps: float, seed: int, records: list[dict]):
    from farm.config import from_dict
    from farm.methods import dpo
    from farm.methods.data import prompt_text
    from farm.models.generation import generate
    from farm.models.loading import is_complete_checkpoint, load_causal_lm

    USED.add(str(out))
    if not is_complete_checkpoint(out / "model"):  # a finished model is reused on a re-run
        TRAINED.append(str(out))
        cfg = from_dict(dpo.Config, {"policy": str(run_dir / "models" / "sft" / "model"), "preferences": str(prefs),
                                     "output_dir": str(out), "loss": loss, "label_smoothing": eps, "beta": 0.1,
                                     "train": {"lr": 1e-4, "seed": seed, "device": "cpu", "progress": False}})
        dpo.run(cfg)
    model, tok = load_causal_lm(str(out / "model"), device="cpu")
    return generate(model, tok, [prompt_text(r, tok) for r in records], max_new_tokens=32, temperature=0.7,
                    batch_size=64, seed=seed + SEED_OFFSETS["eval"]).texts


def reading(data: dict) -> str:
    """One sentence from the rows: at which flip rates a robust loss's 95 % interval vs DPO excludes 0."""
    name = {"robust": "robust DPO", "cdpo": "cDPO"}
    parts = []
    for loss in ("robust", "cdpo"):
        rows = [r for r in data["rows"] if r["loss"] == loss and not r["same_as_dpo"]]
        said = [f"{side} DPO at " + ", ".join(f"{100 * r['flip']:.0f} %" for r in apart)
                for side, apart in (("above", [r for r in rows if r["ci_low"] > 0]),
                                    ("below", [r for r in rows if r["ci_high"] < 0])) if apart]
        parts.append(f"{name[loss]} is {'; '.join(said) or 'not apart from DPO at any extra flip rate'}")
    dpo = [r for r in data["rows"] if r["loss"] == "sigmoid" and "delta" in r]
    moved = (f"DPO itself moves gold by {min(r['delta'] for r in dpo):+.1f} to {max(r['delta'] for r in dpo):+.1f} "
             "points from SFT across the flip rates; " if dpo else "")
    return ("Reading: " + moved + "by 95 % intervals that exclude 0, " + "; ".join(parts) + ". The pool's own "
            "disagreement with gold at ε = 0 is noise neither loss is told about.")


def markdown(data: dict) -> str:
    """The results table (a pure function of bench/results/noise_study.json)."""
    name = {"sigmoid": "DPO", "robust": "robust DPO", "cdpo": "cDPO", "sft": "SFT (start)"}
    k = data.get("train_seeds", 1)
    lines = [f"World `{data['world']}`, seed {data['seed']}, {data['n_eval']} eval prompts, {data['n_pairs']} training "
             f"pairs, {k} training seed(s) per loss (gold wins averaged per prompt over them); gold win rate (%) vs the "
             f"baseline ± SE; Δ vs DPO at the same flip rate (DPO's own row: vs SFT): paired difference ± "
             f"paired SE [95 % bootstrap interval]. SFT start: {data['sft_gold']:.1f} ± {data['sft_se']:.1f}.", "",
             "| extra flip ε | labels agreeing with gold | loss | gold win rate | Δ vs DPO |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        delta = ("—" if "delta" not in r else f"(vs SFT: {r['delta']:+.1f} ± {r['delta_se']:.1f} "
                 f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}])") if r["loss"] == "sigmoid" else (
            f"{r['delta']:+.1f} ± {r['delta_se']:.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
            + (" (= DPO: ε = 0)" if r["same_as_dpo"] else ""))
        lines.append(f"| {100 * r['flip']:.0f} % | {100 * r['agreement']:.1f} % | {name[r['loss']]} | "
                     f"{r['gold']:.1f} ± {r['gold_se']:.1f} | {delta} |")
    reused = ", the rest reused" if data["models_trained"] < data["models"] else ""
    work = (f" ({data['models_trained']} of {data['models']} DPO models trained by this invocation{reused}; "
            f"{'the SFT run made by it' if data['sft_run_made'] else 'the SFT run reused'})"
            if "models" in data else "")
    lines += ["", reading(data), "",
              f"Measured in {data['minutes']:.0f} min{work}; load average {data['load_average'][0]:.1f} → "
              f"{data['load_average'][1]:.1f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="", help="a farm compare run folder to reuse (data/pairs.jsonl, models/sft)")
    ap.add_argument("--flips", type=float, nargs="*", default=[0.0, 0.1, 0.25, 0.4])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seeds", type=int, default=0, help="training seeds per loss (0: the run's method_seeds)")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch
    import yaml

    from farm import docblocks
    from farm.annotators import annotate_pairs
    from farm.annotators.noise import chain, flip
    from farm.eval.stats import paired_comparison
    from farm.io import read_pairs, read_records, write_annotations

    torch.set_num_threads(args.threads)
    t0, load = time.time(), [os.getloadavg()[0]]
    run_dir = Path(args.run) if args.run else prepare_run(args.seed)
    world = world_of(run_dir)
    pairs = read_pairs(run_dir / "data" / "pairs.jsonl")
    records = read_records(run_dir / "data" / "eval.json")
    baseline = {(b["instruction"], b.get("input", "")): b["output"]
                for b in read_records(run_dir / "data" / "baseline_outputs.json")}
    K = args.train_seeds or int(yaml.safe_load((run_dir / "config.yaml").read_text()).get("method_seeds", 1))
    sft_files = [run_dir / "outputs" / f"{seeded('sft', k)}.json" for k in range(K)]
    sft = np.mean([gold_wins(world, records, baseline, [r["output"] for r in read_records(f)])
                   for f in sft_files if f.exists()], axis=0)
    rows = []
    for eps in args.flips:
        labeller = chain(world.annotator("eval_pool", seed=args.seed), flip(eps)) if eps else \
            world.annotator("eval_pool", seed=args.seed)
        anns = annotate_pairs(pairs, labeller, seed=args.seed, cache_path=run_dir / "cache.sqlite", progress=False)
        folder = run_dir / "noise_study" / f"flip_{eps:.2f}"
        prefs = write_annotations(folder / "preferences.jsonl", anns)
        agreement = label_agreement(world, anns)
        wins = {}
        for loss in LOSSES:
            same = loss != "sigmoid" and eps == 0  # ε = 0: robust DPO and cDPO are DPO exactly
            wins[loss] = np.mean([gold_wins(world, records, baseline, train_and_sample(
                run_dir, prefs, folder / seeded("sigmoid" if same else loss, k), loss, eps,
                args.seed + METHOD_SEED_STRIDE * k, records)) for k in range(K)], axis=0)
            row = {"flip": eps, "loss": loss, "agreement": agreement, "same_as_dpo": same,
                   "gold": 100 * wins[loss].mean(), "gold_se": 100 * wins[loss].std(ddof=1) / np.sqrt(len(records))}
            other = sft if loss == "sigmoid" else wins["sigmoid"]  # DPO is paired with SFT, the others with DPO
            pc = paired_comparison(wins[loss], other, name_a=loss, name_b="sft" if loss == "sigmoid" else "sigmoid",
                                   n_boot=args.n_boot, seed=args.seed).iloc[0]
            row.update(delta=float(pc["difference"]), delta_se=float(pc["standard_error"]),
                       ci_low=float(pc["ci_low"]), ci_high=float(pc["ci_high"]), p_value=float(pc["p_value_bootstrap"]))
            rows.append(row)
            print(f"[{(time.time() - t0) / 60:5.1f} min] flip {eps:.2f} {loss:>8}: gold {row['gold']:.1f}"
                  + f", Δ vs {'SFT' if loss == 'sigmoid' else 'DPO'} {row['delta']:+.1f} ± {row['delta_se']:.1f}",
                  flush=True)
    load.append(os.getloadavg()[0])
    data = {"world": world.__class__.__name__, "seed": args.seed, "run": str(run_dir), "n_eval": len(records),
            "n_pairs": len(pairs), "train_seeds": K, "sft_gold": 100 * sft.mean(),
            "sft_se": 100 * sft.std(ddof=1) / np.sqrt(len(sft)),
            "rows": rows, "minutes": (time.time() - t0) / 60, "load_average": load, "models_trained": len(TRAINED),
            "models": len(USED),
            "sft_run_made": not args.run}
    for doc in ("bench/RESULTS.md", "docs/methods/dpo.md"):
        docblocks.write_block(docblocks.ROOT / doc, "noise_study", data, "bench/results/noise_study.json",
                              "bench.bench_noise_study:markdown")
    print(markdown(data))


if __name__ == "__main__":
    main()
