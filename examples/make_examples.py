"""Write the small example inputs in this folder (deterministic: the task world, seed 0). Run from the repo root:

    python examples/make_examples.py

- baseline_outputs.json  the world's fixed baseline on 24 eval prompts (AlpacaEval model_outputs format)
- model_outputs.json     "model_a" (a stronger simulated policy) on the same prompts
- pairs.jsonl            baseline vs model_a and baseline vs model_b on those prompts (48 pairs)
- human_labels.jsonl     the same pairs, each with three simulated people's labels (`human`: P(output_2 better))

They are what the README's Usage commands read, so every one of them runs offline (tests/test_examples.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.io import write_records
from farm.types import Pair, stable_seed
from farm.worlds.tasks import build, sample_output

HERE = Path(__file__).resolve().parent
N_PROMPTS = 24
SKILLS = {"model_a": 0.8, "model_b": 0.45}


def outputs_of(name: str, prompts: list[dict]) -> list[dict]:
    out = []
    for p in prompts:
        rng = np.random.default_rng(stable_seed("example", name, p["instruction"], p["input"]))
        out.append({"instruction": p["instruction"], "input": p["input"], "generator": name,
                    "output": sample_output(p["instruction"], p["input"], rng, SKILLS[name])})
    return out


def main(folder: Path = HERE) -> None:
    folder = Path(folder)
    world = build(0, sft=0, preference=0, unlabeled=0)
    prompts = [{"instruction": r["instruction"], "input": r.get("input", "")} for r in world.eval[:N_PROMPTS]]
    baseline = world.baseline_outputs(prompts)
    models = {name: outputs_of(name, prompts) for name in SKILLS}
    pairs = [Pair(b["instruction"], b["output"], m["output"], input=b["input"], generator_1="baseline",
                  generator_2=name, id=f"{name}-{i:02d}")
             for name, outs in models.items() for i, (b, m) in enumerate(zip(baseline, outs))]
    humans = [world.annotator("human", seed=s).annotate(pairs, seed=0) for s in range(3)]
    write_records(folder / "baseline_outputs.json", baseline)
    write_records(folder / "model_outputs.json", models["model_a"])
    write_records(folder / "pairs.jsonl", [p.to_record() for p in pairs])
    write_records(folder / "human_labels.jsonl", [{**p.to_record(), "human": [h[i].preference for h in humans]}
                                                  for i, p in enumerate(pairs)])
    print(f"wrote {len(pairs)} pairs, {len(prompts)} prompts to {folder}")


if __name__ == "__main__":
    main()
