"""The training loop shared by the gradient-based methods: `TrainConfig` (the `train:` block of every such
method), the optimiser and scheduler, `accelerate`, LoRA, resumable checkpoints (one format for `fit` and the RL
loops), `fit` itself (micro-batches, gradient accumulation, resume, NaN guard), and supervised fine-tuning on
demonstrations (`sft_loss`, `train_sft`), which SFT, expert iteration, rewriting and correction all use.

The loop's one rule: a method's loss function returns a SUM over its units (response tokens, or pairs) and the
loop divides by the GLOBAL number of units in the optimizer step (all micro-batches, all processes). So the update
is the same whether a global batch of 8 arrives as 1×8, 8×1, or 2 processes × 4 (tests/test_methods_zoo1.py).
A per-micro-batch mean would weight a token in a short micro-batch more than one in a long micro-batch.

Departures from AlpacaFarm's trainer: no HF `Trainer`; `accelerate.Accelerator` does device placement and DDP
gradient sync only; the scheduler is ours (stepped once per optimizer step on every process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from farm.errors import FarmError
from farm.io import PathLike
from farm.methods.data import IGNORE_INDEX, pad_sft, sft_rows

# ----- optimisation -----

@dataclass
class TrainConfig:
    """Optimisation and loop settings shared by the gradient-based methods (`train.<key>=` on the command line)."""

    RENAMED: ClassVar[dict[str, str]] = {"log_every": "log_seconds"}  # status lines are timed, not counted

    lr: float = 1e-4
    """peak learning rate"""
    optimizer: str = "adamw"
    """adamw or sgd (sgd: for exact invariance tests)"""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (the RL loops default to torch's 0.01)"""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW β1, β2 (the RL loops default to torch's 0.9, 0.999)"""
    adam_eps: float = 1e-8
    """AdamW ε (the RL loops default to 1e-5, as TRL and OpenRLHF)"""
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
    group_by_length: bool = False
    """batch examples of similar length together (less padding, faster steps; batches are less mixed)"""
    save_every_seconds: float = 0.0
    """also checkpoint once this many seconds have passed since the last one (0 = off): an interrupt then loses
    at most that much work"""
    stop_at_step: int = 0
    """stop (after checkpointing) once this step is done, e.g. to fit a time slot; 0 = off"""
    log_seconds: float = 10.0
    """without a terminal (CI, nohup, a log file), a status line (step, rate, ETA, loss) about this often"""
    device: str = "auto"
    """auto, cpu or cuda"""
    dtype: str = "auto"
    """auto (bf16 on a GPU that has it, else fp32), float32, bfloat16"""
    gradient_checkpointing: bool = False
    """recompute activations in backward (less memory, ~30% slower)"""
    cpu_keep_freed_memory: bool = True
    """on CPU (Linux, glibc), keep freed memory in the process so each step reuses its big buffers instead of
    page-faulting fresh ones (`farm.models.cpu_memory`); the same numbers, but the peak stays resident"""
    progress: bool = True
    """show progress: a bar on a terminal, else a status line every `log_seconds`"""
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
        if len(self.adam_betas) != 2:
            raise FarmError(f"adam_betas needs two numbers, got {list(self.adam_betas)}", field="train.adam_betas")


RL_TRAIN_RENAMED = {k: f"train.{k}" for k in ("lr", "seed", "device", "dtype", "progress", "max_grad_norm")}
"""the keys PPO and RLOO had flat before they nested `train:` (a Config's RENAMED: the error names the new key)"""


def rl_train_config(**kw) -> TrainConfig:
    """The `train:` default of the RL loops (PPO, RLOO, GRPO, safe PPO): torch's AdamW defaults with ε 1e-5 and no
    schedule. They read lr, optimizer, weight_decay, adam_*, max_grad_norm, seed, device, dtype and progress; their
    batch sizes and passes are their own fields."""
    base: dict[str, Any] = {"weight_decay": 0.01, "adam_betas": [0.9, 0.999], "adam_eps": 1e-5,
                            "schedule": "constant", "warmup_ratio": 0.0}
    return TrainConfig(**{**base, **kw})


RL_TRAIN_READS = frozenset({"lr", "optimizer", "weight_decay", "adam_betas", "adam_eps", "max_grad_norm", "seed",
                            "device", "dtype", "progress"})
"""the `train:` keys the RL loops read (their batch sizes, passes and checkpoints are their own fields)"""


def refuse_unread_train_keys(tc: TrainConfig, method: str, reads: frozenset = RL_TRAIN_READS) -> None:
    """A `train.<key>` this method does not read, set away from its default, is an error rather than silently
    ignored (e.g. `train.lora_r` on PPO, `train.max_steps` on RLOO: their own `steps` count)."""
    default = rl_train_config()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in reads and getattr(tc, f.name) != getattr(default, f.name):
            raise FarmError(f"{method} does not read train.{f.name} (set to {getattr(tc, f.name)!r})",
                            field=f"train.{f.name}",
                            hint=f"{method} reads train.{{{', '.join(sorted(reads))}}}; its batch sizes, steps and "
                                 "checkpoints are its own keys (see its Config)")


def make_optimizer(model_or_params, tc: TrainConfig, lr: float | None = None):
    """AdamW (or SGD) over the trainable parameters of a model (or a list of parameters), from `tc`; `lr`
    overrides `tc.lr` (PPO's value model). Every trainer makes its optimiser before its first step, so on CPU this
    is also where the process starts keeping its freed memory (`tc.cpu_keep_freed_memory`)."""
    import torch

    from farm.models import cpu_memory

    items = model_or_params.parameters() if hasattr(model_or_params, "parameters") else model_or_params
    params = [p for p in items if p.requires_grad]
    if tc.cpu_keep_freed_memory and params and all(cpu_memory.applies(p.device) for p in params):
        cpu_memory.keep_freed_memory()
    lr = tc.lr if lr is None else lr
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    # the fused kernel (one pass over each tensor instead of ~8 elementwise ops; TRL's default optimiser, via
    # transformers' `adamw_torch_fused`): the same update to float rounding, about 4× faster on CPU
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay, betas=tuple(tc.adam_betas),
                             eps=tc.adam_eps, fused=fused or None)


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


# ----- checkpoints: one format for `fit` and the RL loops -----
#   out_dir/checkpoint/<name>/   one folder per model (atomic `save_model`, with step.txt): `model` for `fit`;
#                                `policy` (and `value`) for PPO, RLOO and GRPO
#   out_dir/checkpoint/state.pt  the loop state (step, optimiser(s), RNG streams, history) and the sha256 of every
#                                model file, written LAST and atomically: complete = every folder agrees with it


def save_checkpoint(ckpt: Path, tokenizer, step: int, state: dict, **models) -> None:
    """Each model in `ckpt/<name>/` with its step, then `ckpt/state.pt` = `state` + step + file hashes (atomic)."""
    import torch

    from farm.io import atomic_open
    from farm.models.loading import save_model

    for name, model in models.items():
        save_model(model, tokenizer, ckpt / name, extra_files={"step.txt": f"{step}\n"})
    state = {**state, "step": step, "files": {name: _file_hashes(ckpt / name) for name in models}}
    with atomic_open(ckpt / "state.pt", "wb") as f:
        torch.save(state, f)


def load_checkpoint(ckpt: Path, names: Sequence[str]) -> dict | None:
    """The state of a complete `save_checkpoint` whose model folders `names` hold its step; None when there is
    none (or it was killed between the writes: start over). A damaged one (garbled state, a weight file changed
    or cut after it was written) is a FarmError, never loaded. Load the models from ckpt/<name>."""
    import torch

    from farm.models.loading import is_complete_checkpoint

    state_file = ckpt / "state.pt"
    if not state_file.exists() or not all(is_complete_checkpoint(ckpt / n) for n in names):
        return None
    damaged, hint = "checkpoint is damaged (truncated or modified after it was written)", \
        "delete the checkpoint folder to start over"
    try:
        state = torch.load(state_file, weights_only=False, map_location="cpu")
    except Exception as e:  # truncated/garbled pickle or zip: torch raises many kinds
        raise FarmError(f"{damaged}: {type(e).__name__}", file=state_file, hint=hint) from None
    if not isinstance(state, dict) or "step" not in state:
        raise FarmError(damaged, file=state_file, hint=hint)
    if any((ckpt / n / "step.txt").read_text().strip() != str(state["step"]) for n in names):
        return None  # killed between the writes: a model is newer than the state; start over
    for n in names:
        saved, now = state.get("files", {}).get(n), _file_hashes(ckpt / n)
        if saved is not None and saved != now:
            bad = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise FarmError(f"{damaged}: {', '.join(bad)} differ from what was saved", file=ckpt / n, hint=hint)
    return state


def _file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in a model folder: a damaged or swapped weight file is caught on resume."""
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


def _restore_weights(model, folder: Path, state: dict) -> None:
    """Load `fit`'s model back from its checkpoint folder (LoRA: the trainable tensors kept in the state)."""
    from safetensors.torch import load_file

    if "trainable" in state:  # LoRA: base weights are frozen and unchanged
        missing, unexpected = model.load_state_dict(state["trainable"], strict=False)
        if unexpected or set(state["trainable"]) - {k for k, _ in model.named_parameters()}:
            raise FarmError("checkpoint does not match the model", file=folder, hint="delete it to start over")
        return
    weights: dict = {}
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [k for k in missing if k not in tied and "lm_head" not in k]:
        raise FarmError("checkpoint does not match the model", file=folder, hint="delete it to start over")
    if hasattr(model, "tie_weights"):
        model.tie_weights()


# ----- the training loop -----

LossFn = Callable[[Any, dict], tuple[Any, dict]]  # (model, batch) → (loss SUM over units, stats of floats)


def fit(model, tokenizer, examples: Sequence, make_batch: Callable[[list], tuple[dict, float]], loss_fn: LossFn,
        tc: TrainConfig, out_dir: PathLike | None = None, accelerator=None, desc: str = "train",
        prepare_step: Callable[[Any, list[dict], Any], None] | None = None,
        lengths: Sequence[int] | None = None) -> dict[str, Any]:
    """Train `model` in place on `examples`.

    make_batch(list of examples) → (dict of tensors, number of loss units in it), e.g. response tokens;
    loss_fn(model, batch) → (sum of the loss over those units, {name: float}). Each step's gradient is
    Σ loss / (global number of units in the step), the same for any split into micro-batches and processes.
    `prepare_step(model, batches, accelerator)`, if given, runs before each step's micro-batches with this
    process's batch dicts, e.g. to put a statistic of the WHOLE step into them (KTO's reference point: reduce
    it over processes with `accelerator.reduce`), so it too is independent of the split.
    With `out_dir`, checkpoints go to out_dir/checkpoint/ (`save_checkpoint`) and a re-run resumes there
    deterministically.
    Returns {"steps" done, "total_steps", "finished", "loss" (last step's), "history" (per-step dicts, kept
    across resumes), "model" (unwrapped)}.
    """
    import numpy as np
    import torch

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
    state = load_checkpoint(ckpt, ("model",)) if ckpt is not None else None
    if state:
        _restore_weights(model, ckpt / "model", state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start, history = int(state["step"]), list(state["history"])
    model, optimizer = acc.prepare(model, optimizer)

    def order(epoch: int) -> np.ndarray:  # the same on every process; a function of the seed only
        rng = np.random.default_rng(stable_seed(tc.seed, "data", epoch))
        perm = rng.permutation(len(examples))
        if tc.group_by_length and lengths is not None:
            perm = group_by_length(perm, np.asarray(lengths), per_step, rng)
        return perm

    from farm.progress import Progress

    bar = Progress(total, desc, start=start, enabled=tc.progress and acc.is_local_main_process, every=tc.log_seconds)
    last_save = time.monotonic()
    for step in range(start, total):
        t0 = time.time()
        epoch, k = divmod(step, steps_per_epoch)
        idx = order(epoch)[k * per_step:(k + 1) * per_step]
        mine = idx[rank * len(idx) // world:(rank + 1) * len(idx) // world]  # this process's share
        micro = [mine[j:j + tc.per_device_batch_size] for j in range(0, len(mine), tc.per_device_batch_size)]
        batches = [make_batch([examples[i] for i in mb]) for mb in micro]
        if prepare_step is not None:
            prepare_step(model, [b for b, _ in batches], acc)
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
        bar.update(loss=f"{total_loss:.4f}")
        done = step + 1 == total or step + 1 == tc.stop_at_step
        due = (tc.save_every and (step + 1) % tc.save_every == 0) or \
            (tc.save_every_seconds and time.monotonic() - last_save >= tc.save_every_seconds)
        if due:  # the same decision on every process (a time-based one is taken by the main process)
            due = bool(acc.reduce(torch.tensor(float(due), device=acc.device), "max").item())
        if ckpt is not None and (done or due):
            last_save = time.monotonic()
            acc.wait_for_everyone()
            if acc.is_main_process:
                plain = acc.unwrap_model(model)
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "torch_rng": torch.get_rng_state(), "history": history}
                if hasattr(plain, "peft_config"):  # the folder holds only the adapter: keep every trainable tensor
                    state["trainable"] = {k: v.detach().cpu() for k, v in plain.named_parameters() if v.requires_grad}
                save_checkpoint(ckpt, tokenizer, step + 1, state, model=plain)
            acc.wait_for_everyone()
        if step + 1 == tc.stop_at_step:
            break
    bar.close()
    finished = bool(history) and history[-1]["step"] == total
    return {"steps": history[-1]["step"] if history else 0, "total_steps": total, "finished": finished,
            "loss": history[-1]["loss"] if history else float("nan"), "history": history,
            "model": acc.unwrap_model(model)}


def group_by_length(perm, lengths, per_step: int, rng, chunk_steps: int = 64):
    """`perm` reordered so that each step's examples have similar lengths (less padding): within each chunk of
    `chunk_steps` steps, examples are sorted by length, cut into steps, and the steps shuffled. Every example still
    appears once per epoch, in an order that is a function of the seed only.

    >>> import numpy as np
    >>> out = group_by_length(np.arange(8), np.array([1, 9, 2, 8, 3, 7, 4, 6]), 2, np.random.default_rng(0), 4)
    >>> sorted(out.tolist()) == list(range(8)), sorted(tuple(sorted(out[i:i + 2].tolist())) for i in (0, 2, 4, 6))
    (True, [(0, 2), (1, 3), (4, 6), (5, 7)])
    """
    import numpy as np

    out = []
    size = per_step * chunk_steps
    for s in range(0, len(perm), size):
        chunk = perm[s:s + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        steps = [chunk[i:i + per_step] for i in range(0, len(chunk), per_step)]
        for j in rng.permutation(len(steps)):
            out.append(steps[j])
    return np.concatenate(out) if out else perm


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


# ----- supervised fine-tuning on demonstrations (SFT, expert iteration, rewriting, correction) -----

def sft_loss(logits, labels):
    """Summed next-token cross-entropy on labelled (response) tokens, and how many there are.

    logits (B, T, V), labels (B, T) with IGNORE_INDEX on prompt/padding → (loss sum (), n tokens ())."""
    import torch.nn.functional as F

    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    targets = labels[:, 1:]  # (B, T-1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return loss, (targets != IGNORE_INDEX).sum()


def response_logits(model, batch: dict):
    """(logits (n, V) at the n positions that predict a labelled token, their targets (n,)). The LM head runs on
    those positions only (with short answers after long prompts most positions carry no loss); a model that is
    not a plain decoder + head (a DDP wrapper, whose forward must run) gets the full forward instead."""
    import torch

    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX  # (B, T-1)
    decoder = getattr(model, "get_decoder", None)
    head = getattr(model, "get_output_embeddings", None)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) or decoder is None or head is None \
            or decoder() is None or head() is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        return logits[keep], targets[keep]
    hidden = decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return head()(hidden[:, :-1][keep]), targets[keep]


def train_sft(model, tokenizer, records: list[dict], tc: TrainConfig, *, max_len: int = 512, style: str = "alpaca",
              out_dir: str | Path | None = None, accelerator=None) -> dict[str, Any]:
    """Fine-tune `model` in place on demonstrations: records with instruction/input (or a verbatim `prompt`) and
    output, `sft_loss` through `fit`. Returns `fit`'s dict (steps, loss, history, model)."""

    import torch.nn.functional as F

    rows = sft_rows(tokenizer, records, max_len, style)  # tokenised once, not at every step

    def make_batch(rs: list):
        b = pad_sft(rs, tokenizer.pad_token_id)
        return b, float((b["labels"][:, 1:] != IGNORE_INDEX).sum())

    def loss_fn(model, b):
        # the loss of `sft_loss`: summed next-token cross-entropy over the response tokens
        logits, targets = response_logits(model, b)
        return F.cross_entropy(logits.float(), targets, reduction="sum"), {}

    return fit(model, tokenizer, rows, make_batch, loss_fn, tc, out_dir, accelerator, desc="sft",
               lengths=[len(p) + len(r) for p, r in rows])
