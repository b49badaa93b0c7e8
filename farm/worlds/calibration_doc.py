"""The docs/world.md blocks that `farm world calibrate --write-docs` writes (docs/results/world_calibration.json).

`docs_data` turns the calibration table (and a few figures of the world itself) into plain JSON; `markdown` and
`world_markdown` are the pure renderers farm/docblocks.py calls on it. Which judges were fitted is data too, so
the summary sentence says what the table shows and nothing else.
"""

from __future__ import annotations

import math
from typing import Any

# the judges whose (beta, length, position) `farm world calibrate --refit` fits to their rows; the others are
# reported as they come out
NOT_FITTED = ("eval_pool", "gold", "longest")


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def world_figures(seed: int = 0, sft: int = 10_000) -> dict[str, float]:
    """Mean gold quality and share exactly right of the SFT demonstrations, and the baseline's mean gold quality
    on the frozen eval set (what docs/world.md §3 states)."""
    import numpy as np

    from farm.worlds.tasks import build

    world = build(seed, sft=sft, preference=0, unlabeled=0)
    q = np.array([world.quality(r["instruction"], r["input"], r["output"]) for r in world.sft])
    base = world.baseline_outputs(world.eval)
    qb = np.array([world.quality(r["instruction"], r["input"], r["output"]) for r in base])
    return {"seed": seed, "n_demos": len(q), "demo_quality": float(q.mean()),
            "demo_exact": float((q >= 1 - 1e-9).mean()), "n_eval": len(qb), "baseline_quality": float(qb.mean())}


def docs_data(table, *, pairs: int, seed: int, source: str, seconds: float, world: dict) -> dict[str, Any]:
    """The JSON behind the blocks, from `calibration.calibration_table`'s DataFrame."""
    rows = []
    for r in table.itertuples():
        rows.append({"judge": r.judge, "source": "" if r.source != r.source else str(r.source),
                     **{c: _num(getattr(r, c)) for c in ("agreement_target", "agreement", "p_longer_target",
                                                         "p_longer", "p_first_target", "p_first")}})
    return {"pairs": pairs, "seed": seed, "targets": source, "seconds": round(seconds, 1), "rows": rows,
            "world": world}


def _pct(v: float | None, scale: float) -> str:
    return "–" if v is None else f"{v * scale:.1f}"


def _gap(r: dict, col: str, scale: float) -> float | None:
    t, a = r[f"{col}_target"], r[col]
    return None if t is None or a is None else abs(a - t) * scale


def markdown(data: dict) -> str:
    """The calibration table and what it says (docs/world.md §5)."""
    cols = (("agreement", 1.0), ("p_longer", 100.0), ("p_first", 100.0))
    lines = [f"{data['pairs']:,} pairs (`calibration_pairs({data['pairs']}, {data['seed']})`); targets from "
             f"{data['targets']}; {data['seconds']:.0f} s (`farm world calibrate --write-docs`).", "",
             "| judge | AlpacaEval row | agreement % target | achieved | P(longer) target | achieved | "
             "P(first) target | achieved |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        cells = " | ".join(f"{_pct(r[f'{c}_target'], s)} | {_pct(r[c], s)}" for c, s in cols)
        lines.append(f"| {r['judge']} | {r['source']} | {cells} |")
    by = {r["judge"]: r for r in data["rows"]}
    human = max(_gap(by["human"], c, s) for c, s in cols)
    fitted = [g for r in data["rows"] if r["judge"] not in ("human", *NOT_FITTED)
              for c, s in cols if (g := _gap(r, c, s)) is not None]
    lines += ["", f"The simulated human is within {human:.1f} points of all three human figures; every fitted "
              f"preset and the training pool are within {max(fitted):.1f} points of their rows. Not fitted, and "
              "reported as they come out:", ""]
    for name in NOT_FITTED:
        if name not in by:
            continue
        r = by[name]
        t = "" if r["agreement_target"] is None else f" (its row: {r['agreement_target']:.1f}%)"
        lines.append(f"- `{name}` agrees {r['agreement']:.1f}% with the human majority{t}; P(longer) "
                     f"{100 * r['p_longer']:.1f}%, P(first) {100 * r['p_first']:.1f}%.")
    return "\n".join(lines)


def world_markdown(data: dict) -> str:
    """The demonstration mix's and the baseline's gold quality (docs/world.md §3)."""
    w = data["world"]
    return (f"Measured on seed {w['seed']} (`farm world calibrate --write-docs`): the {w['n_demos']:,} SFT "
            f"demonstrations have mean gold quality {w['demo_quality']:.2f} and {100 * w['demo_exact']:.0f}% are "
            f"exactly right; the baseline's outputs on the {w['n_eval']} eval prompts have mean gold quality "
            f"{w['baseline_quality']:.2f}.")
