"""Our RLOO (farm.methods.rloo) vs TRL's RLOOTrainer on the same model, prompts, reward and batch, CPU.

    pip install -e '.[bench]'
    python bench/bench_rloo_trl.py [--steps 20] [--repeats 3] [--threads 1]
    python bench/bench_rloo_trl.py --model smollm2 --steps 4 --prompts 2 --new-tokens 12 --lr 1e-5 --repeats 3

Equal maths: k = 4 samples per prompt, `--prompts` prompts per step (4 → 16 completions), leave-one-out baseline,
KL (k1 summed over the response) in the reward with β = 0.05, one gradient step per rollout (num_iterations = 1:
ratio 1), sequence-level clipped loss averaged over completions, AdamW (eps 1e-5, no weight decay), constant lr,
clip 1.0, temperature 1 with no top-k/top-p, at most `--new-tokens` new tokens, fp32, use_cpu=True. The reward is a
function (fraction of digit characters), so scoring costs nothing and the comparison is about the trainer itself.
Samples differ (different random streams), so the reward curves agree only in trend; throughput = optimiser
steps per second (generation included). Each competitor runs in its own process, interleaved, and reports its
peak RSS. `--model smollm2`: SmolLM2-135M-Instruct with its chat template. Writes bench/results/rloo_trl[_smollm2].json
and its block in bench/RESULTS.md; prints the load average beside the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import emit, model_dir, prompt, run_worker  # noqa: E402

from farm.docblocks import write_block  # noqa: E402
from farm.methods import rloo  # noqa: E402
from farm.methods.loop import rl_train_config  # noqa: E402
from farm.methods.scorers import FunctionScorer  # noqa: E402
from farm.models.loading import load_causal_lm  # noqa: E402

BETA, K = 0.05, 4


def digit_fraction(text: str) -> float:
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


def make_prompts(n: int, kind: str = "tiny", tokenizer_dir: str = "") -> list[str]:
    return [prompt(tokenizer_dir, kind, "Sort: " + " ".join(str((i * 7 + k * 3) % 10) for k in range(3 + i % 3)))
            for i in range(n)]


def run_ours(model_dir: str, prompts: list[str], a) -> dict:
    model, tok = load_causal_lm(model_dir, device="cpu")
    cfg = rloo.Config(steps=a.steps, prompts_per_step=a.prompts, k=K, minibatch_size=a.prompts * K,
                      micro_batch_size=a.prompts * K, kl_coef=BETA, max_new_tokens=a.new_tokens,
                      train=rl_train_config(lr=a.lr, progress=False, device="cpu"))
    scorer = FunctionScorer(lambda instruction, input, output: digit_fraction(output))
    t0 = time.perf_counter()
    hist = rloo.train(model, tok, [{"instruction": p, "input": "", "prompt": p} for p in prompts], scorer, cfg)
    dt = time.perf_counter() - t0
    split = {k: sum(h.get(k, 0.0) for h in hist)
             for k in ("time_generation", "time_scoring", "time_logprobs", "time_policy_forward", "time_update")}
    return {"rewards": [h["reward"] for h in hist], "train_s": dt, "steps_per_s": a.steps / dt, "split": split}


def run_trl(model_dir: str, prompts: list[str], a, out: str) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    model, tok = load_causal_lm(model_dir, device="cpu")

    def reward(prompts, completions, **kw):
        return [digit_fraction(c) for c in completions]

    args = RLOOConfig(output_dir=out, per_device_train_batch_size=a.prompts * K, num_generations=K,
                      gradient_accumulation_steps=1, max_steps=a.steps, learning_rate=a.lr,
                      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_epsilon=1e-5,
                      max_grad_norm=1.0, beta=BETA, num_iterations=1, max_completion_length=a.new_tokens,
                      temperature=1.0, top_k=0, top_p=1.0, bf16=False, fp16=False, gradient_checkpointing=False,
                      use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", dataloader_num_workers=0,
                      seed=0, disable_tqdm=True)
    rewards: list[float] = []

    class Grab(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))

    trainer = RLOOTrainer(model=model, reward_funcs=[reward], args=args, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), callbacks=[Grab()])
    t0 = time.perf_counter()
    trainer.train()
    dt = time.perf_counter() - t0
    return {"rewards": rewards, "train_s": dt, "steps_per_s": a.steps / dt}


def worker(a) -> None:
    torch.set_num_threads(a.threads)
    prompts = make_prompts(64, a.model, a.model_dir)
    with tempfile.TemporaryDirectory() as d:
        emit(run_ours(a.model_dir, prompts, a) if a.worker == "farm" else run_trl(a.model_dir, prompts, a, d))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step (× k = 4 completions)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--worker", choices=("farm", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import trl

    prompts = make_prompts(64)
    runs: dict[str, list[dict]] = {"farm": [], "trl": []}
    with tempfile.TemporaryDirectory() as d:
        path = model_dir(args.model, prompts + [" ".join("0123456789")] * 8, Path(d))
        common = ["--model", args.model, "--model-dir", path, "--steps", str(args.steps), "--threads",
                  str(args.threads), "--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens),
                  "--lr", str(args.lr)]
        for r in range(args.repeats):
            for k in runs:
                runs[k].append(run_worker(__file__, [k, *common]))
                print(f"repeat {r} {k:>4}: {runs[k][-1]['steps_per_s']:.3f} steps/s, peak RSS "
                      f"{runs[k][-1]['peak_rss_mb']:.0f} MB (load average {runs[k][-1]['load_avg']})", flush=True)
    med = {k: statistics.median(x["steps_per_s"] for x in v) for k, v in runs.items()}
    rss = {k: statistics.median(x["peak_rss_mb"] for x in v) for k, v in runs.items()}
    loads = [x for v in runs.values() for r in v for x in r["load_avg"]]

    def ends(r: list[float]) -> tuple[float, float]:
        n = max(1, min(5, len(r) // 2))
        return statistics.mean(r[:n]), statistics.mean(r[-n:])

    print(f"trl {trl.__version__}, torch {torch.__version__}, model {args.model}, threads {args.threads}, "
          f"{args.prompts}×{K} completions/step, {args.steps} steps, repeats {args.repeats}")
    for k in ("farm", "trl"):
        first, last = ends(runs[k][0]["rewards"])
        print(f"{k:>5}: {med[k]:.3f} steps/s, peak RSS {rss[k]:.0f} MB; reward first → last steps {first:.3f} → {last:.3f}")
    split = {k: statistics.median(x["split"][k] for x in runs["farm"]) for k in runs["farm"][0]["split"]}
    print("farm time split (s, median run): " + ", ".join(f"{k[5:]} {v:.2f}" for k, v in split.items()))
    ratio = med["farm"] / med["trl"]
    pr = [f["steps_per_s"] / t["steps_per_s"] for f, t in zip(runs["farm"], runs["trl"])]
    print(f"paired (back-to-back) ratios: {', '.join(f'{x:.2f}' for x in pr)}; median {statistics.median(pr):.2f}x")
    print(f"speed-up farm / trl = {ratio:.2f}x; peak RSS farm / trl = {rss['farm'] / rss['trl']:.2f}; "
          f"load average {min(loads)}–{max(loads)}")
    result = {"trl": trl.__version__, "torch": torch.__version__, "model": args.model, "threads": args.threads,
              "steps": args.steps, "repeats": args.repeats, "prompts": args.prompts, "k": K,
              "new_tokens": args.new_tokens, "lr": args.lr, "median_steps_per_s": med, "peak_rss_mb": rss,
              "speedup": ratio, "farm_split_s": split,
              "paired_ratios": (pr := [f["steps_per_s"] / t["steps_per_s"] for f, t in zip(runs["farm"], runs["trl"])]),
              "paired_speedup": statistics.median(pr), "rewards": {k: v[0]["rewards"] for k, v in runs.items()},
              "load_avg": [min(loads), max(loads)], "runs": runs}
    name = "rloo_trl" if args.model == "tiny" else f"rloo_trl_{args.model}"
    write_block(Path(__file__).parent / "RESULTS.md", name, result, f"bench/results/{name}.json",
                "bench.bench_rloo_trl:markdown")


def markdown(d: dict) -> str:
    """The block in bench/RESULTS.md."""
    med, rss, split = d["median_steps_per_s"], d["peak_rss_mb"], d["farm_split_s"]
    rows = [f"`python bench/bench_rloo_trl.py --model {d['model']} --steps {d['steps']} --prompts {d['prompts']} "
            f"--new-tokens {d['new_tokens']} --lr {d['lr']:g} --repeats {d['repeats']} --threads {d['threads']}` "
            f"(TRL {d['trl']}, torch {d['torch']}, fp32 CPU, {d['prompts']} prompts × k = {d['k']} per step; load "
            f"average {d['load_avg'][0]}–{d['load_avg'][1]} during the runs)", "",
            "| | steps/s (median) | peak RSS (MB) | reward, first → last steps (run 1) |", "|---|---|---|---|"]
    for k, label in (("farm", "farm `rloo.train`"), ("trl", "TRL `RLOOTrainer`")):
        r = d["rewards"][k]
        n = max(1, min(5, len(r) // 2))
        rows.append(f"| {label} | {med[k]:.3f} | {rss[k]:.0f} | {sum(r[:n]) / n:.3f} → {sum(r[-n:]) / n:.3f} |")
    total = sum(split.values())
    paired = (f" (median of the {len(d['paired_ratios'])} back-to-back pairs' ratios {d['paired_speedup']:.2f}×, range "
              f"{min(d['paired_ratios']):.2f}–{max(d['paired_ratios']):.2f})" if "paired_ratios" in d else "")
    rows += ["", f"Speed-up farm / TRL **{d['speedup']:.2f}×**{paired}; peak RSS farm / TRL {rss['farm'] / rss['trl']:.2f}. "
                 f"farm's time (median run, {d['steps']} steps): " + ", ".join(
                     f"{k[5:]} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in split.items()) + "."]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
