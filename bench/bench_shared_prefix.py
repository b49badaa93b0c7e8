"""A DPO step's forward + backward with each prompt run once for both answers (farm/models/shared_prefix.py) vs
the whole [prompt; answer] rows that farm.methods.dpo runs today, interleaved, on SmolLM2-135M-Instruct (or the
tiny model), fp32 CPU. Same maths (tests/test_models.py checks values and gradients).

    python bench/bench_shared_prefix.py [--model smollm2] [--pairs 4] [--prompt-words 30] [--repeats 5]

Writes bench/results/shared_prefix.json and its block in bench/RESULTS.md, with the load average.
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
from harness import load_avg, model_dir, prompt  # noqa: E402

from farm.docblocks import write_block  # noqa: E402
from farm.methods.maths import response_logprobs  # noqa: E402
from farm.models.generation import tokenize_prompts  # noqa: E402
from farm.models.loading import load_causal_lm  # noqa: E402
from farm.models.shared_prefix import continuation_logprobs  # noqa: E402


def batch(tok, kind: str, path: str, pairs: int, words: int):
    prompts = [prompt(path, kind, f"Sort these numbers and explain: {' '.join(str((i * 7 + k) % 10) for k in range(words))}")
               for i in range(pairs)]
    pids, pmask = tokenize_prompts(tok, prompts)
    conts = []
    for texts in ([" ".join(sorted("31415")) for _ in range(pairs)], ["the answer is 5 4 3" for _ in range(pairs)]):
        enc = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        R = max(len(e) for e in enc)
        ids = torch.tensor([e + [tok.pad_token_id] * (R - len(e)) for e in enc])
        conts.append((ids, (ids != tok.pad_token_id).long()))
    return pids, pmask, conts


def step_whole(model, pids, pmask, conts):
    ids = torch.cat([c[0] for c in conts])
    m = torch.cat([c[1] for c in conts])
    lp = response_logprobs(model, pids.repeat(2, 1), pmask.repeat(2, 1), ids, m)
    (lp * m).sum().backward()


def step_shared(model, pids, pmask, conts):
    lps = continuation_logprobs(model, pids, pmask, conts)
    sum((lp * m).sum() for lp, (_, m) in zip(lps, conts)).backward()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="smollm2")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--prompt-words", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        path = model_dir(a.model, ["Sort these numbers and explain: 1 2 3", "the answer is 5 4 3"] * 20, Path(d))
        model, tok = load_causal_lm(path, device="cpu")
        pids, pmask, conts = batch(tok, a.model, path, a.pairs, a.prompt_words)
        times: dict[str, list[float]] = {"whole rows (today)": [], "prompt once (shared_prefix)": []}
        loads = [load_avg()]
        for r in range(a.repeats + 1):
            for name, fn in zip(times, (step_whole, step_shared)):
                model.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                fn(model, pids, pmask, conts)
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - t0)
            loads.append(load_avg())
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(med)
    data = {"model": a.model, "pairs": a.pairs, "prompt_tokens": int(pids.shape[1]),
            "response_tokens": [int(c[0].shape[1]) for c in conts], "repeats": a.repeats, "threads": a.threads,
            "median_s": med, "speedup": med[names[0]] / med[names[1]], "load_avg": [min(loads), max(loads)],
            "torch": torch.__version__}
    print(data)
    write_block(Path(__file__).parent / "RESULTS.md", "shared_prefix", data, "bench/results/shared_prefix.json",
                "bench.bench_shared_prefix:markdown")


def markdown(d: dict) -> str:
    rows = [f"`python bench/bench_shared_prefix.py --model {d['model']} --pairs {d['pairs']} --repeats {d['repeats']}` "
            f"({d['pairs']} pairs, prompt {d['prompt_tokens']} tokens, answers {d['response_tokens'][0]} and "
            f"{d['response_tokens'][1]} tokens, forward + backward of the policy's log-probs, fp32 CPU, "
            f"{d['threads']} thread; median of {d['repeats']} interleaved rounds; load average {d['load_avg'][0]}–"
            f"{d['load_avg'][1]})", "", "| computation | s per step |", "|---|---|"]
    rows += [f"| {k} | {v:.2f} |" for k, v in d["median_s"].items()]
    rows += ["", f"Prompt once: **{d['speedup']:.2f}×** faster per step."]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
