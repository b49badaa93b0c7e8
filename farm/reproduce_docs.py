"""The docs blocks of `farm reproduce <study> --write-docs` (docs/results/reproduction.json).

Studies 1–3 and 5 (`pandalm`, `alpaca_eval_arena`, `alpacafarm_table2`, `live`) save their summary frames (and
PandaLM's full agreement table) into one JSON file; a run of one study replaces that study's entry and keeps the
others. The renderers are pure functions of that JSON: `markdown` (docs/reproduction.md's published-vs-ours
table), `live_markdown` (study 5's figures) and `pandalm_markdown` (docs/evaluation.md's PandaLM table).
"""

from __future__ import annotations

import json
import math
from typing import Any

SOURCE = "docs/results/reproduction.json"
STUDY_LABELS = {"pandalm": "1 PandaLM", "alpaca_eval_arena": "2 Arena", "alpacafarm_table2": "3 Table 2",
                "live": "5 live"}
PANDALM_ROWS = {"humans": "humans (leave-one-out)", "gpt-3.5-turbo": "GPT-3.5", "pandalm-7b": "PandaLM-7B"}


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return round(v, 6) if isinstance(v, float) else v


def _records(frame) -> list[dict]:
    return [{k: _plain(v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in frame.reset_index().to_dict("records")]


def docs_data(name: str, result: dict, *, seed: int, n_boot: int | None, seconds: float,
              old: dict | None = None, **extra: Any) -> dict:
    """The JSON with study `name`'s entry replaced by `result` (the study's dict of DataFrames)."""
    data = {"studies": {}} if old is None else json.loads(json.dumps(old))
    entry = {"seed": seed, "n_boot": n_boot, "seconds": round(seconds, 1), "summary": _records(result["summary"]),
             **extra}
    if name == "pandalm":
        entry["agreement"] = _records(result["agreement"].rename_axis("judge"))
    data["studies"][name] = entry
    return data


def write(name: str, result: dict, *, seed: int, n_boot: int | None, seconds: float, **extra: Any) -> list[str]:
    """Save the JSON and re-render every block that reads this study; returns 'doc: block' lines."""
    from farm import docblocks

    path = docblocks.ROOT / SOURCE
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    data = docs_data(name, result, seed=seed, n_boot=n_boot, seconds=seconds, old=old, **extra)
    targets = [("docs/reproduction.md", "reproduction", "farm.reproduce_docs:markdown")]
    if name == "live":
        targets = [("docs/reproduction.md", "reproduction-live", "farm.reproduce_docs:live_markdown")]
    if name == "pandalm":
        targets.append(("docs/evaluation.md", "pandalm-agreement", "farm.reproduce_docs:pandalm_markdown"))
    out = []
    for doc, block, render in targets:
        docblocks.write_block(docblocks.ROOT / doc, block, data, SOURCE, render)
        out.append(f"{doc}: {block}")
    return out


def _num(v: float | None) -> str:
    return "—" if v is None else (f"{v:.3f}" if abs(v) <= 1 else f"{v:.1f}")


def _decimals(v: float) -> int:
    return len(f"{v:g}".split(".")[1]) if "." in f"{v:g}" else 0


def markdown(data: dict) -> str:
    """Published vs ours for studies 1–3, and whether each published figure is reproduced to its rounding."""
    lines = ["| study | figure | published | ours | 95% interval | note |", "|---|---|---|---|---|---|"]
    same, differ, cmds = [], [], []
    for name in ("pandalm", "alpaca_eval_arena", "alpacafarm_table2"):
        study = data["studies"].get(name)
        if study is None:
            continue
        cmds.append(f"`farm reproduce {name} --write-docs` ({study['seconds']:.0f} s)")
        for r in study["summary"]:
            interval = "" if r["ci_low"] is None else f"{_num(r['ci_low'])}–{_num(r['ci_high'])}"
            ours = _num(r["ours"]) if r["published"] is None else f"**{_num(r['ours'])}**"
            note = r["note"].replace("|", "\\|")
            lines.append(f"| {STUDY_LABELS[name]} | {r['figure']} | {_num(r['published'])} | {ours} | {interval} "
                         f"| {note} |")
            if r["published"] is not None:
                p = r["published"]
                k = _decimals(p)
                if round(r["ours"], k) == round(p, k):
                    same.append(f"{r['figure']} {p:g}")
                else:
                    differ.append(f"{r['figure']} {p:g} (ours {r['ours']:.4f})")
    lines += ["", f"Written by {', '.join(cmds)}, seed {data['studies'].get('pandalm', {}).get('seed', 0)}, "
              "the CLI's bootstrap sizes. Published figures reproduced to the published rounding: "
              + ("; ".join(same) if same else "none") + "."
              + (f" Not reproduced: {'; '.join(differ)}." if differ else "")]
    return "\n".join(lines)


def live_markdown(data: dict) -> str:
    """Study 5: a judge folder beside the recorded GPT-3.5 verdicts on the same PandaLM pairs."""
    study = data["studies"]["live"]
    lines = [f"`farm reproduce live --annotator {study['annotator']} --limit {study['limit']} --write-docs` "
             f"({study['seconds']:.0f} s):", ""]
    lines += [f"- {r['figure']}: {_num(r['ours'])}" for r in study["summary"]]
    return "\n".join(lines)


def pandalm_markdown(data: dict) -> str:
    """The PandaLM meta-evaluation table (docs/evaluation.md) from study 1's agreement table."""
    rows = {r["judge"]: r for r in data["studies"]["pandalm"]["agreement"]}
    lines = ["| | agreement (ties a class) | 95% interval | without ties | soft (AlpacaEval) | vs 2 of 3 humans | "
             "parsed / unparsed | P(prefer longer) | P(prefer first) |", "|---|---|---|---|---|---|---|---|---|"]
    for key, label in PANDALM_ROWS.items():
        r = rows[key]
        agree = f"{r['agreement']:.1f}" if key == "humans" else \
            f"**{r['agreement']:.1f}** ({r['n_agree']:.0f}/{r['n_pairs']:.0f})"
        lines.append(f"| {label} | {agree} | {r['agreement_ci_low']:.1f}–{r['agreement_ci_high']:.1f} | "
                     f"{r['agreement_no_ties']:.1f} | {r['agreement_soft']:.1f} | {r['agreement_loo']:.1f} | "
                     f"{r['n_parsed']:.0f} / {r['n_unparsed']:.0f} | {r['p_prefer_longer']:.2f} | "
                     f"{r['p_prefer_first']:.2f} |")
    lines += ["", "Written by `farm reproduce pandalm --write-docs` (docs/reproduction.md, study 1)."]
    return "\n".join(lines)

