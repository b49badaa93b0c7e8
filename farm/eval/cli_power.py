"""`farm power RUN --delta 3`: how many prompts × training seeds a comparison needs to detect a difference of
`delta` win-rate points against SFT with 80% power, from a pilot `farm compare` run's variances.

    farm power runs/quickstart --delta 2 --judge gold
    from farm.eval.cli_power import power_table; power_table("runs/quickstart", delta=2.0, judge="gold")

The pilot's paired differences d[s, i] (method − SFT, seed s, prompt i) give the variance components (prompt,
seed, residual; `farm.eval.power.variance_components`); the table extrapolates them to other sizes. With few pilot
seeds the seed component is itself uncertain: treat the answer as an order of magnitude, and pilot with ≥ 2 seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from farm.errors import FarmError
from farm.eval import power


def power_table(run_dir: str | Path, delta: float, judge: str = "gold", ref: str = "sft",
                seeds: tuple[int, ...] = (1, 2, 3, 5, 10), alpha: float = 0.05, target: float = 0.8) -> pd.DataFrame:
    """One row per method: its pilot Δ vs `ref`, variance components (SDs in points), this run's SE and minimum
    detectable difference, and for each number of seeds k the prompts needed (`prompts_k{k}`; NaN = not reachable
    with k seeds, the seed variance alone is too large)."""
    from farm.config import load_config
    from farm.eval.report import preference_array
    from farm.run_config import CompareConfig

    d = Path(run_dir)
    if not (d / "config.yaml").exists():
        raise FarmError("not a farm compare run folder (no config.yaml)", file=d)
    cfg = load_config(CompareConfig, d / "config.yaml")
    path = d / "annotations" / f"{judge}.jsonl"
    if not path.exists():
        have = sorted(p.stem for p in (d / "annotations").glob("*.jsonl"))
        raise FarmError(f"the run has no annotations by '{judge}'", file=path, hint=f"judges: {', '.join(have)}")
    if ref not in cfg.methods:
        raise FarmError(f"'{ref}' is not a method of this run", field="ref", hint=f"methods: {', '.join(cfg.methods)}")
    v, keys = preference_array(path, list(cfg.methods), cfg.method_seeds)
    r = cfg.methods.index(ref)
    rows = []
    for a, m in enumerate(cfg.methods):
        if a == r:
            continue
        dm = 100 * (v[a] - v[r])
        c = power.variance_components(dm)
        se = c.se(c.n_prompts, c.n_seeds)
        row = {"method": m, "pilot_difference": float(pd.DataFrame(dm).mean().mean()), "sd_prompt": c.prompt ** 0.5,
               "sd_seed": c.seed ** 0.5, "sd_residual": c.residual ** 0.5, "pilot_prompts": c.n_prompts,
               "pilot_seeds": c.n_seeds, "se": se, "mde": power.minimum_detectable(se, alpha, target),
               "power_at_delta": power.power_of(delta, se, alpha)}
        for k, n in power.required_size(c, delta, seeds, alpha, target).items():
            row[f"prompts_k{k}"] = n
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm power", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a finished farm compare run (the pilot)")
    ap.add_argument("--delta", type=float, required=True, help="difference to detect, in win-rate points")
    ap.add_argument("--judge", default="gold", help="pool, human or gold (default gold)")
    ap.add_argument("--ref", default="sft", help="the method every other is compared with (default sft)")
    ap.add_argument("--seeds", default="1,2,3,5,10", help="numbers of seeds to size for (comma-separated)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--power", type=float, default=0.8)
    ap.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    args = ap.parse_args(argv)
    try:
        seeds = tuple(int(x) for x in args.seeds.split(","))
    except ValueError:
        raise FarmError(f"--seeds must be comma-separated integers, got {args.seeds!r}", field="--seeds") from None
    t = power_table(args.run_dir, args.delta, args.judge, args.ref, seeds, args.alpha, args.power)
    if args.json:
        print(json.dumps(t.reset_index().to_dict(orient="records"), indent=1, default=float))
        return 0
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.precision", 2):
        print(f"To detect Δ = {args.delta:g} points vs {args.ref} under {args.judge} with power {args.power:g} "
              f"(two-sided α = {args.alpha:g}); prompts_kK = eval prompts needed with K training seeds:\n")
        print(t.to_string(float_format=lambda x: f"{x:.2f}"))
    return 0
