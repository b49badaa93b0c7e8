"""`farm estimate` beside the peak resident memory farm's own runs measured on SmolLM2-135M-Instruct (CPU, fp32).

    python bench/bench_dpo_trl.py --model smollm2 ...; python bench/bench_rloo_trl.py --model smollm2 ...;
    python bench/bench_ppo_breakdown.py --model smollm2 ...        # the measured runs (their JSON in bench/results/)
    python bench/bench_estimate_smollm2.py                          # this table

For each measured run the budget is rebuilt from its arguments and its real token lengths (the longest prompt and
response of its data, with the SmolLM2 tokenizer), and `farm.scale.estimate` predicts the tensor peak. A process's
RSS also holds what no estimate counts: the Python interpreter, torch, transformers and the method's imports, so
a baseline is measured here (a process that imports the same modules and loads nothing) and the table compares the
estimate with RSS − baseline. Writes bench/results/estimate_smollm2.json and its block in bench/RESULTS.md and
docs/scaling.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, model_dir  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASELINE = ("import resource, torch, transformers, farm.methods.dpo, farm.methods.ppo, farm.methods.rloo; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def baseline_rss_mb() -> float:
    out = subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return float(out.stdout.strip().splitlines()[-1])


def lengths(tok, prompts: list[str], responses: list[str]) -> tuple[int, int]:
    P = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    R = max(len(tok(r, add_special_tokens=False)["input_ids"]) + 1 for r in responses) if responses else 0
    return P, R


def cases(path: str) -> list[dict]:
    from bench_dpo_trl import make_pairs
    from bench_rloo_trl import make_prompts

    from farm.models.loading import load_tokenizer
    from farm.scale import Budget

    tok = load_tokenizer(path)
    out = []
    dpo = json.loads((RESULTS / "dpo_trl_smollm2.json").read_text()) if (RESULTS / "dpo_trl_smollm2.json").exists() \
        else None
    if dpo:
        pairs = make_pairs(dpo["pairs"], "smollm2", path)
        P, R = lengths(tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
        out.append({"run": f"DPO, {dpo['pairs']} pairs/step", "measured_rss_mb": dpo["median"]["farm"]["peak_rss_mb"],
                    "trl_rss_mb": dpo["median"]["trl"]["peak_rss_mb"],
                    "budget": Budget(method="dpo", batch_size=dpo["pairs"], prompt_len=P, response_len=R,
                                     precision="fp32", device="cpu", reference="precomputed")})
    rloo = json.loads((RESULTS / "rloo_trl_smollm2.json").read_text()) if (RESULTS / "rloo_trl_smollm2.json").exists() \
        else None
    if rloo:
        n = rloo["prompts"] * rloo["k"]
        P, _ = lengths(tok, make_prompts(64, "smollm2", path), [])
        out.append({"run": f"RLOO, {rloo['prompts']} × {rloo['k']} completions", "measured_rss_mb": rloo["peak_rss_mb"]["farm"],
                    "trl_rss_mb": rloo["peak_rss_mb"]["trl"],
                    "budget": Budget(method="rloo", batch_size=n, prompt_len=P, response_len=rloo["new_tokens"],
                                     gen_batch_size=rloo["prompts"], samples_per_prompt=rloo["k"], score_batch_size=n,
                                     precision="fp32", device="cpu", reward_model=False)})
    ppo = RESULTS / "ppo_breakdown_smollm2.json"
    if ppo.exists():
        d = json.loads(ppo.read_text())
        a = d["args"]
        from farm.models.generation import format_prompt

        prompts = [format_prompt("Sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)), "", tok,
                                 style="chat") for i in range(64)]
        P, _ = lengths(tok, prompts, [])
        out.append({"run": f"PPO, {a['rollout']} rollouts", "measured_rss_mb": d["peak_rss_mb"], "trl_rss_mb": None,
                    "budget": Budget(method="ppo", batch_size=a["rollout"] // 2, grad_accum=2, prompt_len=P,
                                     response_len=a["new_tokens"], gen_batch_size=a["rollout"],
                                     score_batch_size=a["rollout"], ppo_epochs=d["epochs"], precision="fp32",
                                     device="cpu", reward_model=False)})
    return out


def main() -> None:
    from dataclasses import asdict

    from farm.docblocks import write_block
    from farm.scale import estimate, resolve_shape

    path = model_dir("smollm2", [], Path("."))
    shape = resolve_shape(path)
    base = baseline_rss_mb()
    rows = []
    for c in cases(path):
        est = estimate(shape, c["budget"])
        b = c["budget"]
        rows.append({"run": c["run"], "measured_rss_mb": c["measured_rss_mb"], "trl_rss_mb": c["trl_rss_mb"],
                     "estimate_mb": est.peak_bytes / 2**20, "peak_phase": max(est.phase_peaks, key=est.phase_peaks.get),
                     "prompt_len": b.prompt_len, "response_len": b.response_len, "budget": asdict(b)})
        print(f"{c['run']}: estimate {rows[-1]['estimate_mb']:.0f} MB ({rows[-1]['peak_phase']}), measured RSS "
              f"{c['measured_rss_mb']:.0f} MB, baseline {base:.0f} MB")
    data = {"baseline_rss_mb": base, "rows": rows, "params": shape.n_params()}
    for doc in (ROOT / "bench" / "RESULTS.md", ROOT / "docs" / "scaling.md"):
        write_block(doc, "estimate_smollm2", data, "bench/results/estimate_smollm2.json",
                    "bench.bench_estimate_smollm2:markdown")


def markdown(d: dict) -> str:
    rows = [f"SmolLM2-135M-Instruct ({d['params'] / 1e6:.1f}M parameters), fp32 CPU, farm's own runs; baseline RSS of "
            f"a process that only imports torch, transformers and the methods: {d['baseline_rss_mb']:.0f} MB "
            "(`python bench/bench_estimate_smollm2.py`)", "",
            "| run | prompt + response tokens | `farm estimate` peak (phase) | measured peak RSS | RSS − baseline | "
            "estimate / (RSS − baseline) | TRL's peak RSS, same run |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        net = r["measured_rss_mb"] - d["baseline_rss_mb"]
        trl = f"{r['trl_rss_mb']:.0f} MB" if r["trl_rss_mb"] else "—"
        rows.append(f"| {r['run']} | {r['prompt_len']} + {r['response_len']} | {r['estimate_mb']:.0f} MB "
                    f"({r['peak_phase']}) | {r['measured_rss_mb']:.0f} MB | {net:.0f} MB | {r['estimate_mb'] / net:.2f} "
                    f"| {trl} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
