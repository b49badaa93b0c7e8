"""What the farm-vs-TRL benches share: the model under test (the tiny Llama or SmolLM2-135M-Instruct), one
competitor per subprocess (so each reports its OWN peak resident memory), interleaved repeats, load averages."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def model_dir(kind: str, texts: list[str], tmp: Path, **tiny_spec) -> str:
    """`tiny`: a tiny Llama built on `texts`; `smollm2`: SmolLM2-135M-Instruct's dequantised fp32 folder."""
    if kind == "smollm2":
        from farm.models.loading import dequantised_gguf, require_smollm2

        return str(dequantised_gguf(require_smollm2()))
    from farm.models.tiny import TinySpec, build_tiny

    return str(build_tiny(texts, tmp / "tiny", TinySpec(**tiny_spec), seed=0))


def prompt(tokenizer_dir: str, kind: str, instruction: str) -> str:
    """The policy's prompt: the chat template for SmolLM2, the Alpaca format for the tiny model."""
    from farm.models.generation import format_prompt

    if kind != "smollm2":
        return format_prompt(instruction)
    from farm.models.loading import load_tokenizer

    return format_prompt(instruction, "", _tokenizer(tokenizer_dir, load_tokenizer), style="chat")


_TOKENIZERS: dict = {}


def _tokenizer(path: str, load):
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load(path)
    return _TOKENIZERS[path]


def run_worker(script: str, args: list[str], timeout: float = 3600) -> dict:
    """Run `python script --worker ...args` in a fresh process; its last stdout line is a JSON result, to which
    the worker adds its peak RSS. The machine's load average before and after is recorded beside it."""
    before = load_avg()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_avg"] = [before, load_avg()]
    return out


def emit(result: dict) -> None:
    """A worker's last line: its result and peak RSS."""
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)
