"""report.md of a `farm compare` run and the README's table of it, as text (`farm report RUN` is farm/report_cli.py)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

JUDGES = (("human", "simulated human"), ("pool", "eval pool"), ("gold", "gold"))


def _ci(v: list[float] | None, signed: bool = False) -> str:
    if not v:
        return "–"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"


def readme_table(data: dict[str, Any]) -> str:
    """The README's quickstart block from `farm.eval.report.readme_rows` (a pure function of that JSON)."""
    judges = [(j, t) for j, t in JUDGES if any(j in r for r in data["rows"])]
    has_delta = any("delta_gold" in r for r in data["rows"])
    head = "| method | " + " | ".join(t for _, t in judges) + (" | Δ gold vs SFT | Δ human vs SFT |" if has_delta
                                                                  else " |")
    lines = [head, "|---" * (len(judges) + 1 + 2 * has_delta) + "|"]
    for r in data["rows"]:
        cells = [_ci(r.get(j)) for j, _ in judges]
        if has_delta:
            for j in ("gold", "human"):
                d = r.get(f"delta_{j}")
                sep = d is not None and (d[1] > 0 or d[2] < 0)
                cells.append((f"**{_ci(d, True)}**" if sep else _ci(d, True)) if d else "—")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    lines += ["", *reading(data)]
    lines += ["", f"Win rate (%) against the baseline on {data['n_prompts']} eval prompts, {data['n_seeds']} training "
              f"seed(s) per method, {data.get('votes', 1)} vote(s) per pair for the pool and the humans, [95% "
              f"interval: seeds, then prompts resampled]; Δ = paired difference with SFT (bold: the interval "
              f"excludes 0)."]
    corr = data.get("correlation") or {}
    if corr:
        lines.append("Rank correlation (Spearman) between the judges' method rankings: "
                     + "; ".join(f"{k} {v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]" for k, v in corr.items()) + ".")
    mde = data.get("mde_80") or {}
    if mde:
        lines.append("Smallest paired difference this run detects with 80% power (median over methods): "
                     + ", ".join(f"{dict(JUDGES).get(j, j)} {v:.1f}" for j, v in mde.items()) + " points.")
    w = data.get("workers", 1)
    lines.append(f"Measured: {data['wall_seconds']:.0f} s wall for the whole run ({data['cpu_seconds']:.0f} s of "
                 f"CPU summed over stages), on {data.get('processor') or 'an unnamed CPU'} ({data.get('cpu_count')} "
                 f"cores{', torch kernels ' + data['cpu_capability'] if data.get('cpu_capability') else ''}), "
                 f"torch {data.get('torch')}, {data.get('threads')} thread(s) in the serial stages"
                 + (f", {w} worker processes of {max(1, data.get('threads', 1) // w)} thread(s) for the method rows"
                    if w > 1 else "") + ".")
    return "\n".join(lines)


def reading(data: dict[str, Any]) -> list[str]:
    """The table in words: which methods beat SFT under gold, which only please the pool or the humans."""
    def names(pred) -> str:
        out = [r["method"] for r in data["rows"] if r["method"] != "sft" and pred(r)]
        return ", ".join(f"`{m}`" for m in out) if out else "none"

    def sep(r, j, sign):
        d = r.get(f"delta_{j}")
        return d is not None and (d[1] > 0 if sign > 0 else d[2] < 0)

    if not any("delta_gold" in r for r in data["rows"]):
        return []
    return [f"Above SFT under gold (the truth), beyond the 95% interval: {names(lambda r: sep(r, 'gold', 1))}. "
            f"Below it: {names(lambda r: sep(r, 'gold', -1))}. "
            f"The simulated humans prefer it to SFT while gold puts it below: "
            f"{names(lambda r: sep(r, 'human', 1) and sep(r, 'gold', -1))}."]


def render_report(run, lb: pd.DataFrame, paired: pd.DataFrame | None, corr: pd.DataFrame | None,
                  oo: list[dict]) -> str:
    cfg, s = run.cfg, run.stages.done
    n_prompts, S = s.get("leaderboard", {}).get("n_prompts"), cfg.method_seeds
    judges = [(j, t) for j, t in JUDGES if f"{j}_win_rate" in lb]
    lines = [f"# farm compare: {run.dir.name}", "",
             f"World: {cfg.world.name or 'user data'} · seed {cfg.seed} · {n_prompts} eval prompts × {S} training "
             f"seed(s) per method · training pool: {cfg.train_pool} · eval pool: {cfg.eval_pool} · human: {cfg.human}",
             "", "## Leaderboard", "",
             "Win rate (%) against the baseline, [95% interval over seeds, then prompts]; LC = the eval pool's "
             "length-controlled win rate; figures/winrates.png.", "",
             "| method | " + " | ".join(t for _, t in judges) + " | pool LC | avg length |",
             "|---" * (len(judges) + 3) + "|"]
    for name, row in lb.iterrows():
        cells = [f"{row[f'{j}_win_rate']:.1f} [{row[f'{j}_win_rate_ci_low']:.1f}, {row[f'{j}_win_rate_ci_high']:.1f}]"
                 for j, _ in judges]
        lc = row.get("pool_length_controlled_winrate", float("nan"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lc:.1f} | {row.get('pool_avg_length', float('nan')):.0f} |")
    if paired is not None and len(paired):
        js = [j for j, _ in judges if j in set(paired.judge)]
        lines += ["", "## Against the SFT policy (paired)", "",
                  "Method − SFT in win-rate points on the same prompts: Δ [95% interval] (bold: excludes 0); "
                  "paired_vs_sft.csv, figures/paired_vs_sft.png.", "",
                  "| method | " + " | ".join(dict(JUDGES)[j] for j in js) + " |", "|---" * (len(js) + 1) + "|"]
        for m in [m for m in lb.index if m != "sft"]:
            cells = []
            for j in js:
                r = paired[(paired.judge == j) & (paired.model_a == m)].iloc[0]
                c = f"{r['difference']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
                cells.append(f"**{c}**" if r["separated"] else c)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        mde = paired.groupby("judge")["mde_80"].median()
        lines += ["", f"**Power.** With {n_prompts} prompts × {S} seed(s), a paired difference is detected with 80% "
                  "power at the 5% level from about: " + ", ".join(f"{dict(JUDGES)[j]} {mde[j]:.1f}" for j in js)
                  + " points (median over methods; `farm power` answers how many prompts × seeds a smaller "
                  "difference needs)."]
    lines += ["", "## Would humans agree?", ""] + _agreement(lb, paired, corr)
    if oo:
        lines += ["", "## Over-optimisation (gold judge)", "",
                  "Gold win rate (%) vs the baseline ± one standard error over prompts (seed 0), as best-of-n grows "
                  "(picked by the reward model, or by the training pool in a knockout) and along PPO's checkpoints; "
                  "figures/overoptimisation.png (the dashed line is SFT).", "",
                  "| method | x | gold win rate | proxy reward |", "|---|---|---|---|"]
        for r in oo:
            proxy = r.get("proxy_reward")
            lines.append(f"| {r['method']} | {r['x_name']}={r['x']} | {r['gold_win_rate']:.1f} ± "
                         f"{r.get('gold_se', float('nan')):.1f} | {'' if proxy is None else f'{proxy:.3f}'} |")
    lines += ["", "## Stages", "", "| stage | seconds | CPU seconds | notes |", "|---|---|---|---|"]
    for name, res in s.items():
        notes = ", ".join(f"{k}={_short(v)}" for k, v in res.items()
                          if k not in ("seconds", "cpu_seconds", "correlation", "figures", "mde_80")
                          and not str(v).startswith(str(run.dir)))
        lines.append(f"| {name} | {res.get('seconds', '')} | {res.get('cpu_seconds', '')} | {notes[:160]} |")
    env_path = run.p("environment.json")
    if env_path.exists():
        env = json.loads(env_path.read_text())
        lines += ["", "## Environment", "", ", ".join(f"{k}: {v}" for k, v in env.items())]
    lines += ["", "## Files", "", "config.yaml · configs/ (every stage's resolved config) · data/ · models/ · outputs/ · "
              "annotations/ · leaderboard*.csv · paired_vs_sft.csv · correlation.csv · overoptimisation.json · "
              "figures/ · stages.json · run.log · environment.json", ""]
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _agreement(lb: pd.DataFrame, paired: pd.DataFrame | None, corr: pd.DataFrame | None) -> list[str]:
    out: list[str] = []
    if corr is None or not len(corr):
        return ["Fewer than 3 methods: no rank correlation."]
    sp = corr[corr.statistic == "spearman"].set_index("pair")
    if "pool vs human" in sp.index:
        r = sp.loc["pool vs human"]
        width = r["ci_high"] - r["ci_low"]
        verdict = ("they agree" if r["ci_low"] > 0.5 else "they agree only loosely" if r["ci_low"] > 0
                   else "this run cannot tell whether they agree")
        out.append(f"The eval pool ranks the {int(r['n_models'])} methods like the simulated humans with Spearman "
                   f"ρ = {r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] (interval width {width:.2f}): "
                   f"{verdict}.")
    if "gold vs human" in sp.index:
        g, gp = sp.loc["gold vs human"], sp.loc["gold vs pool"]
        out.append(f"Against the truth (gold): humans ρ = {g['value']:.2f} [{g['ci_low']:.2f}, {g['ci_high']:.2f}], "
                   f"the pool ρ = {gp['value']:.2f} [{gp['ci_low']:.2f}, {gp['ci_high']:.2f}].")
    out += ["", "| judges | Spearman | Kendall |", "|---|---|---|"]
    for pair in sp.index:
        k = corr[(corr.pair == pair) & (corr.statistic == "kendall")].iloc[0]
        s = sp.loc[pair]
        out.append(f"| {pair} | {s['value']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] | "
                   f"{k['value']:.2f} [{k['ci_low']:.2f}, {k['ci_high']:.2f}] |")
    if paired is not None and {"pool", "gold"} <= set(paired.judge):
        def side(j: str, m: str) -> int:  # +1 / -1 when the interval excludes 0, else 0
            r = paired[(paired.judge == j) & (paired.model_a == m)].iloc[0]
            return 1 if r["ci_low"] > 0 else -1 if r["ci_high"] < 0 else 0

        ms = list(dict.fromkeys(paired.model_a))
        for j in [j for j in ("pool", "human") if j in set(paired.judge)]:
            fooled = [m for m in ms if side(j, m) > 0 and side("gold", m) <= 0]
            if fooled:
                out += ["", f"Above SFT under the {dict(JUDGES)[j]} (beyond its interval) but not under gold: "
                        + ", ".join(fooled) + "."]
    return out
