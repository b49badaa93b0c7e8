"""Plumbing shared by the training methods: data files → records, records → tensors, scorers, the optimizer,
and one training loop (micro-batches, gradient accumulation, `accelerate`, checkpoints, resume, NaN guard).

The loop's one rule: a method's loss function returns a SUM over its units (response tokens, or pairs) and the
loop divides by the GLOBAL number of units in the optimizer step (all micro-batches, all processes). So the update
is the same whether a global batch of 8 arrives as 1×8, 8×1, or 2 processes × 4 (tests/test_methods_zoo1.py).
A per-micro-batch mean would weight a token in a short micro-batch more than one in a long micro-batch.

Departures from AlpacaFarm's trainer: no HF `Trainer`; `accelerate.Accelerator` does device placement and DDP
gradient sync only; the scheduler is ours (stepped once per optimizer step on every process).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from farm.errors import FarmError
from farm.io import PathLike, get_field, preference_from_record, read_records

IGNORE_INDEX = -100  # labels that carry no loss (prompt and padding)


# ----- data files -----

def read_instructions(path: PathLike, need_output: bool = False) -> list[dict[str, str]]:
    """Records with `instruction`, `input` ('' if absent) and `output` (if present; required when need_output)
    from JSON/JSONL[.gz]. Extra keys (`dataset`, `id`, ...) are kept."""
    out = []
    for i, r in enumerate(read_records(path), 1):
        rec = dict(r)
        rec["instruction"] = get_field(r, "instruction", path, i)
        rec["input"] = get_field(r, "input", path, i, default="")
        if need_output or "output" in r:
            rec["output"] = get_field(r, "output", path, i)
        out.append(rec)
    if not out:
        raise FarmError("no records", file=path)
    return out


def split_dialogue(chosen: str, rejected: str, marker: str = "Assistant:") -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) for two full dialogues sharing a prefix (HH-RLHF style): the
    prompt ends after the last `marker` inside the common prefix.

    >>> split_dialogue("H: hi\\n\\nAssistant: yes", "H: hi\\n\\nAssistant: no")
    ('H: hi\\n\\nAssistant:', ' yes', ' no')
    """
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    k = chosen.rfind(marker, 0, n)
    cut = k + len(marker) if k >= 0 else n
    return chosen[:cut], chosen[cut:], rejected[cut:]


def read_preferences(path: PathLike, soft: bool = False) -> list[dict[str, Any]]:
    """Preference triples {instruction, input, prompt?, chosen, rejected, p_chosen} from
    - our annotation files / AlpacaEval annotations (output_1, output_2 and p_output_2 or `preference`), or
    - chosen/rejected records: with `instruction`/`prompt`, or full dialogues (HH-RLHF) split at the last
      'Assistant:' of their common prefix (then `prompt` holds the dialogue text, used verbatim).
    Invalid preferences are dropped. Hard labels (soft=False): ties dropped, p_chosen = 1. Soft labels:
    p_chosen = max(p, 1 - p) = P(chosen better) and ties are kept (they teach r_chosen ≈ r_rejected)."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(read_records(path), 1):
        if "chosen" in r and "rejected" in r:
            chosen, rejected = get_field(r, "chosen", path, i), get_field(r, "rejected", path, i)
            rec: dict[str, Any] = {"instruction": get_field(r, "instruction", path, i, default=""),
                                   "input": get_field(r, "input", path, i, default=""), "p_chosen": 1.0}
            if "prompt" in r:
                rec["prompt"] = get_field(r, "prompt", path, i)
            elif not rec["instruction"]:
                rec["prompt"], chosen, rejected = split_dialogue(chosen, rejected)
            out.append({**rec, "chosen": chosen, "rejected": rejected})
            continue
        if "output_1" not in r:
            raise FarmError("not a preference record: need output_1/output_2 with p_output_2 (or AlpacaEval "
                            "'preference'), or chosen/rejected", file=path, line=i, field="output_1")
        p = preference_from_record(r, path, i)
        if p is None or (p == 0.5 and not soft):
            continue
        o1, o2 = get_field(r, "output_1", path, i), get_field(r, "output_2", path, i)
        chosen, rejected = (o2, o1) if p >= 0.5 else (o1, o2)
        out.append({"instruction": get_field(r, "instruction", path, i), "input": get_field(r, "input", path, i,
                    default=""), "chosen": chosen, "rejected": rejected,
                    "p_chosen": max(p, 1 - p) if soft else 1.0})
    if not out:
        raise FarmError("no usable preference pairs (all invalid or ties?)", file=path)
    return out


# ----- records → tensors -----

def prompt_text(rec: dict, tokenizer=None, style: str = "alpaca") -> str:
    """The prompt a policy sees for a record: its verbatim `prompt` if it has one, else the formatted
    instruction/input."""
    from farm.models.generation import format_prompt

    if rec.get("prompt"):
        return rec["prompt"]
    return format_prompt(rec["instruction"], rec.get("input", ""), tokenizer, style)


def tokenize_sft(tokenizer, records: Sequence[dict], max_len: int = 512, style: str = "alpaca",
                 response_key: str = "output") -> dict[str, Any]:
    """Right-padded `input_ids`, `attention_mask` (B, T) and `labels` (B, T): labels are the response tokens
    plus the appended EOS (EOS is trained on: it teaches when to stop) and IGNORE_INDEX on prompt and padding.

    Prompt and response are tokenized separately (no special tokens added), exactly as `generate` sees them.
    Too long: the prompt keeps its end (at most half of max_len when the response is long), the response
    keeps its start (and then has no EOS)."""
    import torch

    rows = []
    for rec in records:
        p = tokenizer(prompt_text(rec, tokenizer, style), add_special_tokens=False)["input_ids"]
        r = tokenizer(rec[response_key], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        r_keep = min(len(r), max_len - min(len(p), max_len // 2))
        p = p[len(p) - (max_len - r_keep):] if len(p) + r_keep > max_len else p
        rows.append((p, r[:r_keep]))
    T = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(r)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sequence_rewards(model, input_ids, attention_mask):
    """Scalar model output at the LAST REAL token of each row (per the attention mask). (B, T) → (B,) fp32.

    Goes through the model's own forward (so a DDP-wrapped model syncs its gradients), whose pooling picks the
    last non-pad token; we check that this is the last real token of every row (pad ≠ eos, no pad inside)."""
    from farm.methods.maths import last_token_index, position_ids_from_mask

    pad = getattr(model, "module", model).config.pad_token_id
    if not (last_token_index(input_ids != pad) == last_token_index(attention_mask)).all():
        raise ValueError("a row's last non-pad token is not its last real token (pad == eos, or a pad token "
                         "inside the text?)")
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask))
    return out.logits.squeeze(-1).float()  # (B,)


# ----- scorers: (records, responses) → one float each -----

@runtime_checkable
class Scorer(Protocol):
    """Scores responses to records (instruction, input). Higher is better."""

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]: ...


class RewardModelScorer:
    """A reward model (an HF sequence-classification folder or a loaded model) read at the last real token."""

    def __init__(self, path_or_model, tokenizer=None, *, style: str = "alpaca", max_len: int = 512,
                 batch_size: int = 16, device: str = "auto"):
        if isinstance(path_or_model, (str, Path)):
            from farm.models.loading import load_scalar_model

            path_or_model, tokenizer = load_scalar_model(str(path_or_model), device=device, tokenizer=tokenizer)
        if tokenizer is None:
            raise ValueError("RewardModelScorer needs the tokenizer of a loaded model")
        self.model, self.tokenizer = path_or_model, tokenizer
        self.style, self.max_len, self.batch_size = style, max_len, batch_size

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]:
        import torch

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[float] = []
        try:
            with torch.no_grad():
                for s in range(0, len(responses), self.batch_size):
                    recs = [{**r, "output": o} for r, o in
                            zip(records[s:s + self.batch_size], responses[s:s + self.batch_size])]
                    b = tokenize_sft(self.tokenizer, recs, self.max_len, self.style)
                    r = sequence_rewards(self.model, b["input_ids"].to(device), b["attention_mask"].to(device))
                    out.extend(r.tolist())
        finally:
            self.model.train(was_training)
        return out


class JudgeScorer:
    """An annotator-derived reward: how much a judge (any `Annotator`: an LLM judge folder, a pool, a simulated
    judge) prefers the response to a reference response for the same prompt, in [0, 1] (a verdict 0/1, a
    logprob-weighted probability, 0.5 for a tie or an invalid verdict), minus an optional length penalty.

    - the reference is `reference(records) → texts` (e.g. the reference policy's greedy answers), asked once per
      prompt and cached here;
    - the order shown to the judge is random per pair (seeded), so a position bias is noise, not a signal;
    - `length_penalty` λ subtracts λ · (|response| − |reference|) / 10 (characters): judges that like longer
      answers otherwise teach the policy to pad (AlpacaEval's length-controlled win rate fixes the same bias at
      evaluation time);
    - `fresh_reference`: the reference is asked anew for every batch, `reference(records, seed)` (e.g. a SAMPLE
      of the reference policy), not cached: a judge's persistent taste about one fixed (response, reference) pair
      cannot be learned and exploited when the reference changes every time;
    - `both_orders` asks the judge twice, once in each order, and averages: twice the requests, half the
      variance of a noisy judge's verdict, and no position bias even on one response;
    - verdicts go through `annotate_pairs`, so `cache_path` makes them resumable and free on a re-run.
    `n_requests`, `n_invalid` and `price` count the judge's work."""

    def __init__(self, annotator, reference: Callable[..., list[str]], *, length_penalty: float = 0.0,
                 seed: int = 0, cache_path: str | Path | None = None, both_orders: bool = False,
                 fresh_reference: bool = False):
        self.annotator, self.reference = annotator, reference
        self.length_penalty, self.seed, self.cache_path = length_penalty, seed, cache_path
        self.both_orders, self.fresh_reference = both_orders, fresh_reference
        self._refs: dict[tuple[str, str], str] = {}
        self.n_requests = self.n_invalid = 0
        self.price = 0.0

    def references(self, records: Sequence[dict]) -> list[str]:
        keys = [(r.get("instruction", r.get("prompt", "")), r.get("input", "")) for r in records]
        missing = {k: r for k, r in zip(keys, records) if k not in self._refs}
        if missing:
            self._refs.update(zip(missing, self.reference(list(missing.values()))))
        return [self._refs[k] for k in keys]

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]:
        import numpy as np

        from farm.types import stable_seed

        # randomness from the batch's content, not a call counter: a resumed run asks exactly what it would have
        batch_seed = stable_seed(self.seed, *responses)
        refs = self.reference(records, batch_seed) if self.fresh_reference else self.references(records)
        swap = np.random.default_rng(batch_seed).random(len(records)) < 0.5  # True: the response is shown first
        prefs = [self._ask(records, responses, refs, swap, batch_seed)]
        if self.both_orders:  # the other order, with its own seed (a pool draws its member and flips again)
            prefs.append(self._ask(records, responses, refs, ~swap, batch_seed + 1))
        return [sum(p) / len(p) - self.length_penalty * (len(o) - len(f)) / 10.0
                for *p, o, f in zip(*prefs, responses, refs)]

    def _ask(self, records, responses, refs, swap, batch_seed: int) -> list[float]:
        """P(response preferred over its reference) per record, with the response first where `swap`."""
        from farm.annotators import annotate_pairs
        from farm.types import Pair

        pairs = [Pair(r.get("instruction", r.get("prompt", "")), *((o, f) if s else (f, o)), input=r.get("input", ""),
                      id=f"judge-reward-{batch_seed}-{i}")
                 for i, (r, o, f, s) in enumerate(zip(records, responses, refs, swap))]
        anns = annotate_pairs(pairs, self.annotator, seed=batch_seed % 2**31, cache_path=self.cache_path,
                              progress=False)
        out = []
        for a, s in zip(anns, swap):
            self.n_requests += 1
            self.price += a.price
            if a.preference is None:
                self.n_invalid += 1
            out.append(0.5 if a.preference is None else (1.0 - a.preference if s else a.preference))
        return out


def scorer_stats(scorer) -> dict[str, Any]:
    """The judge's work behind a `JudgeScorer` reward (requests, invalid verdicts, dollars); {} for other scorers."""
    if not isinstance(scorer, JudgeScorer):
        return {}
    return {"judge_requests": scorer.n_requests, "judge_invalid": scorer.n_invalid, "judge_price": scorer.price}


def reward_scorer(cfg, method: str, ref_model, tokenizer, annotator=None) -> Scorer:
    """The reward of an RL method's config (PPO, RLOO, …): `cfg.reward_judge` (an annotator-derived reward, a
    `JudgeScorer` against the reference policy's greedy answers, verdicts cached in `output_dir/judge_cache.sqlite`;
    `annotator` overrides how the name is loaded, e.g. a world's own simulated judge) or `cfg.reward_model`."""
    if cfg.reward_judge:
        if annotator is None:
            from farm.annotators import load_annotator

            annotator = load_annotator(cfg.reward_judge)

        if cfg.judge_reference not in ("greedy", "sample"):
            raise FarmError(f"judge_reference must be greedy or sample, got {cfg.judge_reference!r}",
                            field="judge_reference")
        sample = cfg.judge_reference == "sample"

        def reference(records: Sequence[dict], seed: int | None = None) -> list[str]:
            from farm.models.generation import generate

            prompts = [prompt_text(r, tokenizer, cfg.prompt_style) for r in records]
            return generate(ref_model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, greedy=not sample,
                            temperature=cfg.temperature, batch_size=64, seed=seed,
                            max_prompt_tokens=cfg.max_prompt_tokens).texts

        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        return JudgeScorer(annotator, reference, length_penalty=cfg.judge_length_penalty, seed=cfg.seed,
                           cache_path=Path(cfg.output_dir) / "judge_cache.sqlite",
                           both_orders=cfg.judge_both_orders, fresh_reference=sample)
    if not cfg.reward_model:
        raise FarmError(f"{method} needs a reward: set `reward_model` or `reward_judge`", field="reward_model")
    return RewardModelScorer(cfg.reward_model, style=cfg.prompt_style, device=cfg.device)


class FunctionScorer:
    """Any python function fn(instruction, input, output) -> float, e.g. a world's gold quality."""

    def __init__(self, fn: Callable[[str, str, str], float]):
        self.fn = fn

    def score(self, records: Sequence[dict], responses: Sequence[str]) -> list[float]:
        return [float(self.fn(r["instruction"], r.get("input", ""), o)) for r, o in zip(records, responses)]


# ----- optimisation -----

@dataclass
class TrainConfig:
    """Optimisation and loop settings shared by the gradient-based methods (`train.<key>=` on the command line)."""

    lr: float = 1e-4
    """peak learning rate"""
    optimizer: str = "adamw"
    """adamw or sgd (sgd: for exact invariance tests)"""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay"""
    schedule: str = "cosine"
    """cosine, linear or constant (after warmup)"""
    warmup_ratio: float = 0.03
    """fraction of the steps with linear warmup from 0"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm (0 = off)"""
    per_device_batch_size: int = 8
    """examples per micro-batch per process"""
    grad_accum: int = 1
    """micro-batches per optimizer step; global batch = per_device_batch_size × grad_accum × processes"""
    epochs: float = 1.0
    """passes over the data (ignored when max_steps > 0)"""
    max_steps: int = 0
    """optimizer steps (0 = from epochs)"""
    seed: int = 0
    """data order and initialisation seed"""
    save_every: int = 0
    """checkpoint every k steps (0 = only at the end); a re-run resumes from the last checkpoint"""
    stop_at_step: int = 0
    """stop (after checkpointing) once this step is done, e.g. to fit a time slot; 0 = off"""
    log_every: int = 10
    """print a one-line status every k steps when there is no progress bar (not a TTY); 0 = never"""
    device: str = "auto"
    """auto, cpu or cuda"""
    dtype: str = "auto"
    """auto (bf16 on a GPU that has it, else fp32), float32, bfloat16"""
    gradient_checkpointing: bool = False
    """recompute activations in backward (less memory, ~30% slower)"""
    progress: bool = True
    """tqdm progress bar (only on a TTY)"""
    lora_r: int = 0
    """LoRA rank (0 = full fine-tuning); needs `pip install peft`; the saved model has the adapter merged"""
    lora_alpha: float = 16.0
    """LoRA scale numerator (scale = alpha / r)"""
    lora_dropout: float = 0.0
    """dropout on the LoRA input"""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """module names that get adapters (Llama/Qwen/Mistral naming)"""

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise FarmError(f"unknown optimizer {self.optimizer!r}", field="train.optimizer", hint="adamw or sgd")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise FarmError(f"unknown schedule {self.schedule!r}", field="train.schedule",
                            hint="cosine, linear or constant")
        if self.per_device_batch_size < 1 or self.grad_accum < 1:
            raise FarmError("batch sizes must be >= 1", field="train.per_device_batch_size")


def make_optimizer(model, tc: TrainConfig):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr)
    return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.95))


def make_scheduler(optimizer, tc: TrainConfig, total_steps: int):
    """Linear warmup then cosine/linear decay to 0 (or constant)."""
    import torch

    warmup = int(tc.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if tc.schedule == "constant":
            return 1.0
        frac = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 1 - frac) if tc.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_accelerator(tc: TrainConfig):
    """One `Accelerator`: CPU when asked or when no GPU; under `accelerate launch` it joins the process group."""
    from accelerate import Accelerator

    from farm.models.loading import pick_device

    return Accelerator(cpu=pick_device(tc.device) == "cpu")


def maybe_lora(model, tc: TrainConfig):
    """`model` wrapped with LoRA adapters when tc.lora_r > 0 (base weights frozen; a scalar model's head stays
    trainable), else `model` unchanged. peft is imported only here."""
    if tc.lora_r <= 0:
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise FarmError("train.lora_r > 0 needs peft", field="train.lora_r", hint="pip install peft") from None
    seq_cls = type(model).__name__.endswith("ForSequenceClassification")
    cfg = LoraConfig(r=tc.lora_r, lora_alpha=tc.lora_alpha, lora_dropout=tc.lora_dropout,
                     target_modules=list(tc.lora_targets), task_type="SEQ_CLS" if seq_cls else "CAUSAL_LM")
    import torch

    from farm.types import stable_seed

    with torch.random.fork_rng(devices=[]):  # adapter init from the run's seed, not from whatever ran before
        torch.manual_seed(stable_seed(tc.seed, "lora"))
        return get_peft_model(model, cfg)


def merged(model):
    """A plain transformers model: LoRA adapters merged into the base weights (no-op without LoRA)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def weights_dtype(tc: TrainConfig) -> str:
    """The dtype name to load weights in for `tc.device`: load on CPU in it, and let `fit` move the model (so
    every process of a multi-GPU launch does not first land on cuda:0)."""
    from farm.models.loading import pick_device, pick_dtype

    return str(pick_dtype(tc.dtype, pick_device(tc.device))).removeprefix("torch.")


class NonFiniteLossError(FarmError):
    """The loss became NaN/inf: training stops rather than writing a broken model."""


# ----- checkpoints -----

def save_loop_checkpoint(ckpt: Path, tokenizer, step: int, state: dict, **models) -> None:
    """An RL loop's resumable checkpoint (PPO, RLOO): each model in `ckpt/<name>/` with its step, then the loop
    state (`ckpt/state.pt`, atomic) LAST, so `loop_checkpoint` can tell a complete checkpoint from a killed write."""
    import torch

    from farm.io import atomic_open
    from farm.models.loading import save_model

    for name, model in models.items():
        save_model(model, tokenizer, ckpt / name, extra_files={"step.txt": f"{step}\n"})
    with atomic_open(ckpt / "state.pt", "wb") as f:
        torch.save(state, f)


def loop_checkpoint(ckpt: Path, names: Sequence[str]) -> dict | None:
    """The loop state of `save_loop_checkpoint` when every model folder `names` is complete and holds its step;
    None otherwise (nothing saved, or killed between the writes: start over). Load the models from ckpt/<name>."""
    import torch

    from farm.models.loading import is_complete_checkpoint

    if not (ckpt / "state.pt").exists() or not all(is_complete_checkpoint(ckpt / n) for n in names):
        return None
    state = torch.load(ckpt / "state.pt", weights_only=False, map_location="cpu")
    same = all((ckpt / n / "step.txt").read_text().strip() == str(state["step"]) for n in names)
    return state if same else None


def _save_checkpoint(ckpt: Path, model, tokenizer, optimizer, scheduler, step: int, extra: dict) -> None:
    """Model folder (atomic `save_model`, with step.txt) then state.pt (atomic); resume needs both to agree."""
    import torch

    from farm.io import atomic_open
    from farm.models.loading import save_model

    save_model(model, tokenizer, ckpt, extra_files={"step.txt": f"{step}\n"})
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "extra": extra, "files": _file_hashes(ckpt)}
    if hasattr(model, "peft_config"):  # the folder holds only the adapter: keep every trainable tensor here
        state["trainable"] = {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}
    with atomic_open(ckpt.parent / f"{ckpt.name}.state.pt", "wb") as f:
        torch.save(state, f)


def _file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in the checkpoint folder: a damaged or swapped weight file is caught on resume."""
    import hashlib

    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
            out[f.name] = h.hexdigest()
    return out


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> tuple[int, dict] | None:
    """Restore weights, optimizer, scheduler and RNG from `ckpt` if it is complete; the step, or None."""
    import torch
    from safetensors.torch import load_file

    from farm.models.loading import is_complete_checkpoint

    state_file = ckpt.parent / f"{ckpt.name}.state.pt"
    if not (is_complete_checkpoint(ckpt) and state_file.exists()):
        return None
    damaged = "checkpoint is damaged (truncated or modified after it was written)"
    try:
        state = torch.load(state_file, weights_only=False, map_location="cpu")
    except Exception as e:  # truncated/garbled pickle or zip: torch raises many kinds
        raise FarmError(f"{damaged}: {type(e).__name__}", file=state_file,
                        hint="delete it (and the checkpoint folder) to start over") from None
    if not isinstance(state, dict) or "step" not in state:
        raise FarmError(damaged, file=state_file, hint="delete it (and the checkpoint folder) to start over")
    if str(state["step"]) != (ckpt / "step.txt").read_text().strip():
        return None  # killed between the two writes: the model is newer than the state; start over
    now = _file_hashes(ckpt) if "files" in state else None
    if now is not None and state["files"] != now:
        bad = sorted(k for k in set(state["files"]) | set(now) if state["files"].get(k) != now.get(k))
        raise FarmError(f"{damaged}: {', '.join(bad)} differ from what was saved", file=ckpt,
                        hint="delete the checkpoint folder and its .state.pt to start over")
    if "trainable" in state:  # LoRA: base weights are frozen and unchanged
        missing, unexpected = model.load_state_dict(state["trainable"], strict=False)
        if unexpected or set(state["trainable"]) - {k for k, _ in model.named_parameters()}:
            raise FarmError("checkpoint does not match the model", file=ckpt, hint="delete it to start over")
    else:
        weights: dict = {}
        for f in sorted(ckpt.glob("*.safetensors")):
            weights.update(load_file(str(f)))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        if unexpected or [k for k in missing if k not in tied and "lm_head" not in k]:
            raise FarmError("checkpoint does not match the model", file=ckpt, hint="delete it to start over")
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), state.get("extra", {})


# ----- the training loop -----

LossFn = Callable[[Any, dict], tuple[Any, dict]]  # (model, batch) → (loss SUM over units, stats of floats)


def fit(model, tokenizer, examples: Sequence, make_batch: Callable[[list], tuple[dict, float]], loss_fn: LossFn,
        tc: TrainConfig, out_dir: PathLike | None = None, accelerator=None, desc: str = "train") -> dict[str, Any]:
    """Train `model` in place on `examples`.

    make_batch(list of examples) → (dict of tensors, number of loss units in it), e.g. response tokens;
    loss_fn(model, batch) → (sum of the loss over those units, {name: float}). Each step's gradient is
    Σ loss / (global number of units in the step), the same for any split into micro-batches and processes.
    With `out_dir`, checkpoints go to out_dir/checkpoint and a re-run resumes there deterministically.
    Returns {"steps" done, "total_steps", "finished", "loss" (last step's), "history" (per-step dicts, kept
    across resumes), "model" (unwrapped)}.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from farm.types import stable_seed

    acc = accelerator or make_accelerator(tc)
    world, rank = acc.num_processes, acc.process_index
    per_step = tc.per_device_batch_size * tc.grad_accum * world
    steps_per_epoch = len(examples) // per_step
    if steps_per_epoch == 0:
        raise FarmError(f"{len(examples)} examples are fewer than one global batch ({per_step} = "
                        f"{tc.per_device_batch_size} per device × {tc.grad_accum} accumulation × {world} processes)",
                        field="train.per_device_batch_size", hint="lower the batch size or add data")
    total = tc.max_steps or max(1, int(tc.epochs * steps_per_epoch))
    if tc.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = make_optimizer(model, tc)
    scheduler = make_scheduler(optimizer, tc, total)
    ckpt = Path(out_dir) / "checkpoint" if out_dir is not None else None
    start, history = 0, []
    if ckpt is not None:
        loaded = _load_checkpoint(ckpt, model, optimizer, scheduler)
        if loaded:
            start, extra = loaded
            history = extra.get("history", [])
    model, optimizer = acc.prepare(model, optimizer)

    def order(epoch: int) -> np.ndarray:  # the same on every process; a function of the seed only
        return np.random.default_rng(stable_seed(tc.seed, "data", epoch)).permutation(len(examples))

    show = tc.progress and acc.is_local_main_process and sys.stderr.isatty()
    bar = tqdm(range(start, total), desc=desc, disable=not show, leave=False)
    for step in bar:
        t0 = time.time()
        epoch, k = divmod(step, steps_per_epoch)
        idx = order(epoch)[k * per_step:(k + 1) * per_step]
        mine = idx[rank * len(idx) // world:(rank + 1) * len(idx) // world]  # this process's share
        micro = [mine[j:j + tc.per_device_batch_size] for j in range(0, len(mine), tc.per_device_batch_size)]
        batches = [make_batch([examples[i] for i in mb]) for mb in micro]
        n_global = acc.reduce(torch.tensor(float(sum(n for _, n in batches)), device=acc.device), "sum").item()
        loss_sum = torch.zeros((), device=acc.device)
        stats: dict[str, float] = {}
        for j, (batch, _) in enumerate(batches):
            batch = {key: v.to(acc.device) if torch.is_tensor(v) else v for key, v in batch.items()}
            sync = contextlib.nullcontext() if j == len(batches) - 1 else acc.no_sync(model)
            with sync:
                loss, s = loss_fn(model, batch)
                # DDP averages gradients over processes: × world turns that mean back into a global sum
                acc.backward(loss * world / max(n_global, 1e-12))
            loss_sum += loss.detach().float()
            for key, v in s.items():
                stats[key] = stats.get(key, 0.0) + float(v) / len(batches)
        total_loss = acc.reduce(loss_sum, "sum").item() / max(n_global, 1e-12)
        if not math.isfinite(total_loss):
            raise NonFiniteLossError(f"loss is {total_loss} at step {step + 1}; no update applied",
                                     hint="lower train.lr, use float32, or check the data for empty texts")
        if tc.max_grad_norm > 0:
            stats["grad_norm"] = float(acc.clip_grad_norm_(model.parameters(), tc.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        rec = {"step": step + 1, "loss": total_loss, "lr": scheduler.get_last_lr()[0], "units": n_global,
               "seconds": time.time() - t0, **stats}
        history.append(rec)
        bar.set_postfix(loss=f"{total_loss:.4f}")
        if tc.progress and not show and acc.is_main_process and tc.log_every and (step + 1) % tc.log_every == 0:
            print(f"{desc} step {step + 1}/{total} loss {total_loss:.4f} lr {rec['lr']:.2e} "
                  f"({rec['seconds']:.2f}s/step)", file=sys.stderr, flush=True)
        done = step + 1 == total or step + 1 == tc.stop_at_step
        if ckpt is not None and (done or (tc.save_every and (step + 1) % tc.save_every == 0)):
            acc.wait_for_everyone()
            if acc.is_main_process:
                _save_checkpoint(ckpt, acc.unwrap_model(model), tokenizer, optimizer, scheduler, step + 1,
                                 {"history": history})
            acc.wait_for_everyone()
        if step + 1 == tc.stop_at_step:
            break
    finished = bool(history) and history[-1]["step"] == total
    return {"steps": history[-1]["step"] if history else 0, "total_steps": total, "finished": finished,
            "loss": history[-1]["loss"] if history else float("nan"), "history": history,
            "model": acc.unwrap_model(model)}


def write_metrics(out_dir: PathLike, metrics: dict[str, Any]) -> Path:
    """out_dir/metrics.json (atomic), dropping values that are not plain data (models, tensors)."""
    import json

    from farm.io import atomic_write_text

    plain = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool, list, dict, type(None)))}
    path = Path(out_dir) / "metrics.json"
    atomic_write_text(path, json.dumps(plain, indent=2, default=str))
    return path


def finish_run(out_dir: PathLike, result: dict, tokenizer, extra: dict[str, Any]) -> dict[str, Any]:
    """After `fit`: on the main process save out_dir/model (atomic) and out_dir/metrics.json, once training has
    reached its last step (a run stopped early by stop_at_step only leaves its checkpoint)."""
    from accelerate import PartialState

    from farm.models.loading import save_model

    metrics = {k: v for k, v in result.items() if k != "model"}
    metrics.update(extra)
    if result["finished"] and PartialState().is_main_process:
        metrics["model_dir"] = str(save_model(merged(result["model"]), tokenizer, Path(out_dir) / "model"))
        write_metrics(out_dir, metrics)
    return metrics
