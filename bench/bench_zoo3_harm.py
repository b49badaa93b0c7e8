"""Safe RLHF and the inference-time methods on the harm world (farm/worlds/harm.py), one seed, tiny Llama, CPU.

Pipeline: SFT on the harm world's demonstrations (30% unsafe requests, demos comply with prob. `--comply`) →
two samples per preference prompt, labelled twice (helpfulness: the simulated AlpacaFarm pool on
`harm.quality_parts`; harmlessness: `HarmJudge`, 10% label noise) → Bradley–Terry RM on the helpfulness labels →
ppo, safe_ppo (cost model from the harm labels), rewrite, correct, critique_revise (judge = the RM), and two
oracle variants judged by GOLD helpfulness (rewrite_gold, critique_revise_gold). Every method answers the 200 eval
prompts (temperature 0.7, one seed); reported: gold helpfulness minus SFT (paired over prompts, SE = std/√n), gold
win rate vs the world's baseline, harmless rate (no flagged word) overall and on unsafe requests.

    python bench/bench_zoo3_harm.py --out /tmp/zoo3 --steps 40 --comply 0.7 --sft-epochs 12   # ~4 min, 1 core

Writes bench/results/zoo3_harm.json and its block in docs/methods/safe_ppo.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from farm.io import read_records, write_records
from farm.methods import correct, critique_revise, ppo, reward, rewrite, safe_ppo, sft
from farm.methods.data import prompt_text
from farm.methods.loop import TrainConfig, rl_train_config
from farm.methods.scorers import FunctionScorer, RewardSpec
from farm.models.generation import generate
from farm.models.loading import load_causal_lm
from farm.models.tiny import TinySpec, build_tiny
from farm.types import Pair
from farm.worlds import harm, tasks

METHODS = ("ppo", "safe_ppo", "rewrite", "correct", "critique_revise", "rewrite_gold", "critique_revise_gold")


def tc(lr: float, epochs: float, batch: int) -> TrainConfig:
    return TrainConfig(lr=lr, epochs=epochs, per_device_batch_size=batch, progress=False, device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/zoo3")
    ap.add_argument("--steps", type=int, default=40, help="PPO / safe PPO iterations")
    ap.add_argument("--comply", type=float, default=0.7, help="P(demonstration complies with an unsafe request)")
    ap.add_argument("--sft-epochs", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    R, t0 = Path(args.out), time.time()
    w = harm.build(args.seed, unsafe_share=0.3, comply=args.comply, sft=2000, preference=600, unlabeled=400, eval=200)
    paths = w.write(R / "data")
    texts = [prompt_text(r) + r["output"] for r in w.splits["sft"]]
    build_tiny(texts, R / "init", TinySpec(), seed=args.seed)
    sft.run(sft.Config(policy=str(R / "init"), data=str(paths["sft"]), output_dir=str(R / "sft"), max_len=160,
                       train=tc(3e-3, args.sft_epochs, 32)))
    SFT = str(R / "sft/model")
    pol, tok = load_causal_lm(SFT, device="cpu")

    def sample(model, recs, n=1, temp=1.0, seed=0):
        return generate(model, tok, [prompt_text(r, tok) for r in recs for _ in range(n)], max_new_tokens=32,
                        temperature=temp, batch_size=64, seed=seed).texts

    prefs = w.splits["preference"]
    t = sample(pol, prefs, n=2, seed=1)
    pairs = [Pair(r["instruction"], t[2 * i], t[2 * i + 1], input=r["input"]) for i, r in enumerate(prefs)]
    labels = harm.two_stage_records(pairs, harm.helpfulness_annotator("alpacafarm_pool"), harm.HarmJudge(noise=0.1))
    write_records(R / "harm_preferences.jsonl", labels)
    write_records(R / "preferences.jsonl", [{k: v for k, v in r.items() if k not in ("p_safer_2", "unsafe_1",
                                                                                     "unsafe_2")} for r in labels])
    rm_res = reward.run(reward.Config(policy=SFT, data=str(R / "preferences.jsonl"), output_dir=str(R / "reward"),
                                      max_len=160, train=tc(1e-3, 3.0, 32)))
    RM = str(R / "reward/model")
    files = dict(policy=SFT, prompts=str(paths["unlabeled"]))
    rl = dict(steps=args.steps, rollout_batch_size=32, minibatch_size=16, micro_batch_size=16, epochs=2,
              value_lr=3e-4, max_new_tokens=32, kl_coef=0.02, save_every=0,
              train=rl_train_config(lr=3e-4, device="cpu", progress=False))
    ev_file = str(paths["eval"])
    runs: dict[str, dict] = {}
    gold = FunctionScorer(harm.quality)
    for m in METHODS:
        out, ts = str(R / m), time.time()
        if m == "ppo":
            res = ppo.run(ppo.Config(output_dir=out, reward=RewardSpec(model=RM), **files, **rl))
        elif m == "safe_ppo":
            res = safe_ppo.run(safe_ppo.Config(output_dir=out, harm_preferences=str(R / "harm_preferences.jsonl"),
                                               eval_prompts=ev_file, lambda_lr=0.2, train=tc(1e-3, 3.0, 32),
                                               reward_model=RM, ppo=ppo.Config(output_dir="", **rl), **files))
        elif m.startswith("rewrite"):
            res = rewrite.run(rewrite.Config(policy=SFT, prompts=str(paths["unlabeled"]), reward_model=RM,
                                             output_dir=out, eval_prompts=ev_file,
                                             train=tc(1e-3, 3.0, 16)), scorer=gold if m.endswith("gold") else None)
        elif m == "correct":
            res = correct.run(correct.Config(policy=SFT, preferences=str(R / "preferences.jsonl"), output_dir=out,
                                             reward_model=RM, eval_prompts=ev_file,
                                             train=tc(1e-3, 3.0, 16)))
        else:
            cfg = critique_revise.Config(policy=SFT, eval_prompts=ev_file, output_dir=out, rounds=2, n_revisions=4,
                                         device="cpu", reward_model="" if m.endswith("gold") else RM)
            res = critique_revise.run(cfg, scorer=gold if m.endswith("gold") else None)
        runs[m] = {k: v for k, v in res.items() if isinstance(v, (int, float, list))} | {"seconds": time.time() - ts}
        print(f"[{time.time() - t0:5.0f}s] {m}", flush=True)
    ev, base = read_records(paths["eval"]), read_records(paths["baseline_outputs"])
    qb = [harm.quality(r["instruction"], r["input"], b["output"]) for r, b in zip(ev, base)]
    rows, q_sft = [], None
    for m in ("sft", *METHODS):
        if m == "sft":
            outs = sample(pol, ev, temp=0.7, seed=7)
        elif (R / m / "model_outputs.json").exists():
            outs = [o["output"] for o in read_records(R / m / "model_outputs.json")]
        else:
            outs = sample(load_causal_lm(str(R / m / "model"), device="cpu")[0], ev, temp=0.7, seed=7)
        q = np.array([harm.quality(r["instruction"], r["input"], o) for r, o in zip(ev, outs)])
        q_sft = q if q_sft is None else q_sft
        bad = np.array([harm.is_harmful(r["instruction"], r["input"], o) for r, o in zip(ev, outs)])
        unsafe = np.array([r["unsafe"] for r in ev])
        d = q - q_sft
        rows.append({"method": m, "gold_minus_sft": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
                     "gold_quality": float(q.mean()),
                     "gold_win_vs_baseline": float(np.mean([1.0 if a > b else 0.5 if a == b else 0.0
                                                            for a, b in zip(q, qb)])),
                     "harmless_rate": float(1 - bad.mean()), "harmless_on_unsafe": float(1 - bad[unsafe].mean())})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    result = {"args": vars(args), "world": f"{harm.VERSION} (tasks {tasks.VERSION})", "rm_heldout": rm_res.get("heldout"),
              "leaderboard": rows, "runs": runs, "seconds": time.time() - t0}
    from farm import docblocks

    docblocks.write_block(docblocks.ROOT / "docs" / "methods" / "safe_ppo.md", "zoo3_harm", result,
                          "bench/results/zoo3_harm.json", "bench.bench_zoo3_harm:markdown")


LABELS = {"ppo": "ppo (helpfulness RM)", "rewrite": "rewrite (RM judge)",
          "critique_revise": "critique_revise (RM judge)", "rewrite_gold": "rewrite, gold judge (oracle)",
          "critique_revise_gold": "critique_revise, gold judge (oracle)"}


def markdown(d: dict) -> str:
    """The block in docs/methods/safe_ppo.md (a pure function of bench/results/zoo3_harm.json)."""
    a, rm, runs = d["args"], d["rm_heldout"], d["runs"]
    rows = [f"`python bench/bench_zoo3_harm.py --out {a['out'].removesuffix('/bench')} --steps {a['steps']} --comply "
            f"{a['comply']:g} --sft-epochs {a['sft_epochs']:g}` (world {d['world']}, seed {a['seed']}, "
            f"{d['seconds']:.0f} s); RM held-out accuracy vs pool labels **{rm['accuracy']:.2f} ± "
            f"{rm['accuracy_se']:.2f}** (n = {rm['n']}).", "",
            "| method | gold − SFT | gold win vs baseline | harmless (all) | harmless on unsafe requests |",
            "|---|---|---|---|---|"]
    for r in d["leaderboard"]:
        delta = "0" if r["method"] == "sft" else f"{r['gold_minus_sft']:+.3f} ± {r['se']:.3f}".replace("-", "−")
        rows.append(f"| {LABELS.get(r['method'], r['method'])} | {delta} | {r['gold_win_vs_baseline']:.3f} | "
                    f"{r['harmless_rate']:.3f} | {r['harmless_on_unsafe']:.3f} |")
    lam = runs["safe_ppo"]["lambda_trajectory"]
    cr = runs["critique_revise"]["accepted_per_round"]
    crg = runs["critique_revise_gold"]["accepted_per_round"]
    rows += ["", f"safe_ppo: cost model pair accuracy {runs['safe_ppo']['cost_model_accuracy']:.2f} in training; λ "
             f"{lam[0]:.2f} → {max(lam):.2f} (its peak) → {lam[-1]:.2f} (last logged). correct: changes "
             f"{100 * runs['correct']['changed_share']:.0f}% of the eval answers; their RM score "
             f"{runs['correct']['eval_score_draft']:.3f} (drafts) → {runs['correct']['eval_score']:.3f}. rewrite: "
             f"{100 * runs['rewrite']['rewritten_share']:.1f}% of its training pairs hold a rewrite, "
             f"{100 * runs['rewrite']['eval_rewritten_share']:.1f}% of the eval prompts are rewritten (gold judge: "
             f"{100 * runs['rewrite_gold']['rewritten_share']:.1f}% / "
             f"{100 * runs['rewrite_gold']['eval_rewritten_share']:.1f}%). critique_revise: share of revisions "
             f"accepted per round {' / '.join(f'{x:.2f}' for x in cr)} (gold judge: "
             f"{' / '.join(f'{x:.2f}' for x in crg)})."]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
