"""docs/scaling.md's worked estimates, written by `farm estimate` itself (arithmetic only: nothing is trained).

    python bench/make_scaling_docs.py   # docs/results/scaling_estimates.json and its blocks in docs/scaling.md

Each case is one `farm estimate` command line (run through the CLI's own `main`, with `--json`); the blocks are pure
functions of the saved JSON: the worked Qwen2.5-0.5B PPO run with its levers, the terms of that run, and the
~8B runs on one GPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm import docblocks, scale  # noqa: E402

GiB = 1024 ** 3
QWEN_PPO = "qwen2.5-0.5b --train-config configs/gpu_qwen05b_ppo.yaml"
QWEN_DPO = "qwen2.5-0.5b --train-config configs/gpu_qwen05b_dpo.yaml"
LORA = "--lora-rank 16 --reference lora_disabled --grad-checkpointing --offload reward"
L8 = "llama-3.1-8b"
# (name, group, what the case is, the arguments of `farm estimate`)
CASES: tuple[tuple[str, str, str, str], ...] = (
    ("ppo_bf16", "qwen", "four models resident, bf16 weights and AdamW states (the worked case)",
     f"{QWEN_PPO} --precision bf16"),
    ("ppo_bf16_score16", "qwen", "the same, reference log-probs in chunks of 16",
     f"{QWEN_PPO} --precision bf16 --score-batch-size 16"),
    ("ppo_bf16_fast", "qwen", "the same as the worked case, vLLM-like decoding and a realistic MFU",
     f"{QWEN_PPO} --precision bf16 --tflops 200 --decode-ms-per-layer 0.2"),
    ("ppo_bf16_lora", "qwen", "LoRA r=16 on all linears, reference = the disabled adapter, checkpointing, "
     "reward offloaded", f"{QWEN_PPO} --precision bf16 {LORA}"),
    ("ppo_fp32", "qwen", "the shipped config (`dtype: float32`)", f"{QWEN_PPO} --precision fp32 --tflops 100"),
    ("dpo_bf16", "qwen", "DPO, reference model resident", f"{QWEN_DPO} --precision bf16"),
    ("dpo_bf16_precomputed", "qwen", "DPO, precomputed reference log-probs",
     f"{QWEN_DPO} --precision bf16 --reference precomputed"),
    ("l8_ppo", "8b", "Llama-3.1-8B PPO, full fine-tuning, 4 models, micro-batch 4",
     f"{L8} --method ppo --batch-size 4 --ppo-epochs 2 --examples 9600"),
    ("l8_ppo_lora", "8b", "same, LoRA policy + disabled-adapter reference + checkpointing + reward offloaded",
     f"{L8} --method ppo --batch-size 4 --ppo-epochs 2 --examples 9600 {LORA}"),
    ("l8_dpo_lora", "8b", "Llama-3.1-8B DPO, LoRA r=16, disabled-adapter reference, checkpointing, micro-batch 2",
     f"{L8} --method dpo --batch-size 2 --lora-rank 16 --reference lora_disabled --grad-checkpointing "
     "--examples 10000"),
    ("l8_sft_fsdp", "8b", "Llama-3.1-8B SFT, mixed precision, FSDP over 8 GPUs",
     f"{L8} --method sft --precision mixed --devices 8 --shard fsdp --examples 10000"),
)


def run_case(args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        scale.main([*shlex.split(args), "--json"])
    d = json.loads(out.getvalue())
    return {"peak_gib": d["peak_gib"], "phase_peaks_gib": {k: v / GiB for k, v in d["phase_peaks_bytes"].items()},
            "cpu_offload_gib": d["cpu_offload_bytes"] / GiB, "seconds": d["seconds"], "params": d["params"],
            "steps": d["budget"]["examples"], "terms": [{"component": t["component"], "phase": t["phase"],
                                                         "gib": t["bytes"] / GiB, "formula": t["formula"]}
                                                        for t in d["terms"]]}


def main() -> None:
    data = {"cases": [{"name": n, "group": g, "what": w, "args": a, **run_case(a)} for n, g, w, a in CASES]}
    doc = docblocks.ROOT / "docs" / "scaling.md"
    for block, render in (("scaling_qwen", "markdown_qwen"), ("scaling_terms", "markdown_terms"),
                          ("scaling_8b", "markdown_8b")):
        docblocks.write_block(doc, block, data, "docs/results/scaling_estimates.json",
                              f"bench.make_scaling_docs:{render}")


def _peak(c: dict) -> str:
    phase = max(c["phase_peaks_gib"], key=c["phase_peaks_gib"].get)
    off = f" (+ {c['cpu_offload_gib']:.2f} GiB CPU RAM)" if c["cpu_offload_gib"] else ""
    return f"**{c['peak_gib']:.2f} GiB** ({phase}){off}"


def markdown_qwen(d: dict) -> str:
    """The Qwen2.5-0.5B cases: peak per phase and time per iteration (150 iterations = the config's `steps`)."""
    rows = ["| case | `farm estimate …` | peak (phase) | policy update | value update | generation | scoring | "
            "s / iteration |", "|---|---|---|---|---|---|---|---|"]
    for c in d["cases"]:
        if c["group"] != "qwen":
            continue
        p = c["phase_peaks_gib"]
        cells = " | ".join(f"{p[k]:.2f}" if k in p else "—" for k in ("train", "value_train", "generate", "score"))
        rows.append(f"| {c['what']} | `{c['args']}` | {_peak(c)} | {cells} | {c['seconds'].get('step', 0):.2f} |")
    ppo = {c["name"]: c for c in d["cases"]}
    per_run = ", ".join(f"{ppo[n]['seconds']['epoch'] / 60:.0f} min ({n})" for n in ("ppo_bf16", "ppo_bf16_fast",
                                                                                       "ppo_fp32"))
    return "\n".join(rows + ["", f"GiB per device. The config's 150 iterations: {per_run}."])


def markdown_terms(d: dict) -> str:
    """Every term of the worked case, as `farm estimate` prints it."""
    c = next(c for c in d["cases"] if c["name"] == "ppo_bf16")
    n = c["params"]
    rows = [f"`farm estimate {c['args']}`: N = {n['policy']:,} parameters (reward/value model "
            f"{n['reward/value']:,}).", "", "| component | phase | GiB | formula |", "|---|---|---|---|"]
    rows += [f"| {t['component']} | {t['phase']} | {t['gib']:.3f} | {t['formula']} |" for t in c["terms"]]
    s = c["seconds"]
    rows += ["", "Time per iteration: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.items() if k != "epoch") + "."]
    return "\n".join(rows)


def markdown_8b(d: dict) -> str:
    """The ~8B runs on one GPU (or eight, for FSDP): peak per GPU and one epoch's time."""
    rows = ["| run | `farm estimate …` | peak/GPU (phase) | epoch |", "|---|---|---|---|"]
    for c in d["cases"]:
        if c["group"] == "8b":
            t = c["seconds"]["epoch"]
            rows.append(f"| {c['what']} | `{c['args']}` | {_peak(c)} | "
                        f"{f'{t:.0f} s' if t < 600 else f'{t / 60:.0f} min'} / {c['steps']:,} examples |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
