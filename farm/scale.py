"""`farm estimate`: memory and time a training config will need, worked out from parameter counts and token
budgets BEFORE anything is loaded (no weights are read: only a config.json, a tiny spec or a known shape).

Every number is a sum of named terms, printed with its formula, so a user can check it by hand
(docs/scaling.md walks through one). Conventions: N = parameters, B = micro-batch (sequences), T = prompt +
response tokens, h = hidden, L = layers, I = MLP width, V = vocabulary, d = bytes per element.

Memory model (per device):
- weights: N·d for every resident model (policy, reference, reward, value); a reference given by the policy's
  disabled LoRA adapter or by precomputed log-probs costs nothing; `offload` moves reference/reward to CPU RAM.
- grads: trainable·d_param; Adam: 2·trainable·d_param (torch AdamW keeps its states in the parameter dtype).
  Mixed precision (`mixed`: fp32 master weights, bf16 autocast) adds a bf16 copy of the weights (autocast cache).
- activations saved for backward, per token per layer (Llama block, counted tensor by tensor, see ACT_*):
  (9h + 4I)·d, plus one fp32 copy of h per RMSNorm when d < 4 (HF norms upcast). With gradient checkpointing
  only each block's input (h·d) is kept, plus one block's full set while it is recomputed.
  Eager attention also keeps the (B, heads, T, T) probabilities; SDPA/flash kernels keep O(T) only.
- logits: B·T·V in the model dtype from the LM head (T = response + 1 for dpo/ppo/rloo, which use
  `logits_to_keep`), then fp32 copies (upcast, log-softmax output kept for
  backward, its gradient): LOGIT_COPIES_TRAIN fp32 copies at the backward peak. At 150k vocabularies this is
  often the largest single term.
- generation: KV cache 2·(L + 1)·kv_heads·head_dim·(P + R)·B_gen·d (the +1: HF's cache grows by concatenation).

Time model: training FLOPs ≈ 6·N·tokens (4·N with LoRA, +2·N with checkpointing), forward-only ≈ 2·N·tokens, at an achieved FLOP/s per device
(`--tflops`, default 40% of an H100's bf16 dense peak; on CPU `calibrate_cpu()` measures it). Autoregressive
decoding is rarely FLOP-bound: each new token reads all weights once (≥ N·d / bandwidth per step) and, in HF
`generate`, pays a fixed launch/Python cost per layer per step (`decode_ms_per_layer`, an assumption); the
estimate takes the largest of the three.

Departures / simplifications: attention FLOPs (12·L·h·T per token) are added, embedding FLOPs are not;
no fragmentation allowance (allocators add ~5-15%); the optimizer step's temporaries (foreach Adam) are one
extra copy of the trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from farm.errors import FarmError

GiB = 1024**3

# Saved-for-backward tensors of one HF Llama block, per token, in units of h (or I) elements:
# input x, norm-1 output, q after RoPE, sdpa output, its contiguous copy (o_proj input), residual sum,
# norm-2 output → 7h; k after RoPE and v → 2·kv_dim; MLP: gate, silu(gate), up, silu·up → 4I.
ACT_H, ACT_I = 7, 4
LOGIT_COPIES_TRAIN = 3  # fp32 B·T·V copies alive at the start of backward (log-softmax out, its grad, logits)
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "mixed": 4}

# Shapes copied from the models' HF config.json files (hidden, layers, heads, kv heads, MLP width, vocab).
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152,
                         tie_embeddings=True),
    "qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936,
                         tie_embeddings=True, qkv_bias=True),
    "qwen2.5-1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936,
                         tie_embeddings=True, qkv_bias=True),
    "llama-3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256,
                         tie_embeddings=True, head_dim=64),
    "qwen2.5-7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064,
                       tie_embeddings=False, qkv_bias=True),
    "llama-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000,
                     tie_embeddings=False),
    "llama-3.1-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256,
                         tie_embeddings=False),
}


@dataclass
class Shape:
    """The numbers of a decoder-only (Llama/Qwen/Mistral-style) transformer that memory and FLOPs depend on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tie_embeddings: bool = True
    qkv_bias: bool = False
    head_dim: int | None = None

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def block_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.hd, self.kv_heads * self.hd
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * h * self.intermediate + 2 * h  # + two RMSNorm weights

    def n_params(self, lm_head: bool = True) -> int:
        """Total parameters. `lm_head=False` for a reward/value model (the scalar head replaces it)."""
        embed = self.vocab * self.hidden
        head = self.vocab * self.hidden if (lm_head and not self.tie_embeddings) else 0
        scalar = 0 if lm_head else self.hidden  # one-output score head, no bias
        return embed + self.layers * self.block_params() + self.hidden + head + scalar

    def lora_params(self, rank: int, targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")) -> int:
        """r·(in + out) per targeted linear per block."""
        h, q, kv, i = self.hidden, self.heads * self.hd, self.kv_heads * self.hd, self.intermediate
        dims = {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, i), "up": (h, i), "down": (i, h)}
        return self.layers * sum(rank * (a + b) for t, (a, b) in dims.items() if t in targets)


def shape_from_hf_config(cfg: dict[str, Any]) -> Shape:
    """Shape from a HF config.json dict (Llama, Qwen2, Mistral, Gemma-like key names)."""
    try:
        heads = int(cfg["num_attention_heads"])
        return Shape(
            hidden=int(cfg["hidden_size"]), layers=int(cfg["num_hidden_layers"]), heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads), intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]), tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") == "qwen2",
            head_dim=cfg.get("head_dim"),
        )
    except KeyError as e:
        raise FarmError(f"config.json lacks {e.args[0]!r}", field=e.args[0],
                        hint="a decoder-only HF config (Llama, Qwen2, Mistral) is needed") from None


def resolve_shape(model: str | None = None, config_json: str | None = None) -> Shape:
    """A known name (see KNOWN_SHAPES), a model folder with config.json, or a config.json path."""
    if config_json:
        p = Path(config_json)
    elif model and model.lower() in KNOWN_SHAPES:
        return Shape(**KNOWN_SHAPES[model.lower()])
    elif model and Path(model).is_dir():
        p = Path(model) / "config.json"
    elif model and model.startswith("tiny"):
        from farm.models.tiny import TinySpec

        spec = TinySpec()
        return Shape(spec.hidden, spec.n_layers, spec.heads, spec.heads, spec.intermediate, spec.vocab_size,
                     spec.tie_embeddings)
    else:
        raise FarmError(f"unknown model {model!r}", field="model",
                        hint=f"known: {', '.join(KNOWN_SHAPES)}, 'tiny', a model folder, or --config-json")
    if not p.exists():
        raise FarmError("config.json not found", file=p)
    try:
        return shape_from_hf_config(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise FarmError(f"not valid JSON: {e.msg}", file=p, line=e.lineno) from None


Method = Literal["sft", "reward", "dpo", "ppo", "rloo", "best_of_n", "expert_iteration"]
# method → (trained model, sequences per example, residents besides the policy)
METHOD_MODELS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "sft": ("policy", 1, ()),
    "reward": ("reward", 2, ()),
    "dpo": ("policy", 2, ("reference",)),
    "ppo": ("policy", 1, ("reference", "reward", "value")),
    "rloo": ("policy", 1, ("reference", "reward")),
    "best_of_n": ("none", 1, ("reward",)),
    "expert_iteration": ("policy", 1, ("reward",)),
}
RESPONSE_ONLY_LOGITS = ("dpo", "ppo", "rloo")


@dataclass
class Budget:
    """What a run does per optimizer step, and the levers that change its memory."""

    method: str = "sft"
    batch_size: int = 8
    """sequences (or pairs, for reward/dpo) per micro-batch on one device"""
    grad_accum: int = 1
    prompt_len: int = 256
    response_len: int = 256
    gen_batch_size: int = 0
    """sequences generated at once (0 = batch_size)"""
    score_batch_size: int = 0
    """sequences per no-grad scoring forward (reference/reward log-probs; 0 = batch_size)"""
    samples_per_prompt: int = 1
    """responses sampled per prompt (best-of-n n, RLOO k)"""
    precision: str = "bf16"
    """fp32, bf16 (pure: weights/grads/Adam in bf16), or mixed (fp32 master + bf16 autocast)"""
    lora_rank: int = 0
    """0 = full fine-tuning"""
    grad_checkpointing: bool = False
    reference: str = "model"
    """model (a second copy), lora_disabled (free; needs lora_rank>0), precomputed (free), none"""
    offload: tuple[str, ...] = ()
    """resident models kept in CPU RAM and moved in when used: reference, reward"""
    attention: str = "sdpa"
    """sdpa (O(T) memory) or eager (keeps B·heads·T² probabilities)"""
    ppo_epochs: int = 1
    """passes over each rollout batch (ppo/rloo)"""
    device: str = "cuda"
    """cuda or cpu (changes only the optimizer's temporaries: foreach on CUDA, a per-tensor loop on CPU)"""
    devices: int = 1
    shard: str = "none"
    """none/ddp (replicated) or fsdp/zero3 (weights, grads, Adam split across devices)"""
    tflops: float = 400.0
    """achieved dense TFLOP/s per device (H100 bf16 peak ≈ 989; 40% is a good run)"""
    bandwidth_gbps: float = 3350.0
    """device memory bandwidth, GB/s (H100 SXM 3350; H200 4800)"""
    decode_ms_per_layer: float = 1.0
    """fixed cost per decoder layer per generated token (kernel launches, Python): an ASSUMPTION for HF
    `generate` in eager mode on a GPU, not measured here; ~0.2 for vLLM with CUDA graphs; 0 to ignore"""
    examples: int = 0
    """examples (prompts or pairs) in one epoch; 0 = estimate one optimizer step only"""
    reward_model: bool = True
    """False when a function or a remote judge scores (ppo/rloo/best-of-n): no resident reward model"""

    def __post_init__(self) -> None:
        if self.method not in METHOD_MODELS:
            raise FarmError(f"unknown method {self.method!r}", field="method", hint=f"known: {', '.join(METHOD_MODELS)}")
        if self.precision not in DTYPE_BYTES:
            raise FarmError(f"unknown precision {self.precision!r}", field="precision",
                            hint="fp32, bf16, fp16 or mixed")
        if self.reference not in ("model", "lora_disabled", "precomputed", "none"):
            raise FarmError(f"unknown reference {self.reference!r}", field="reference",
                            hint="model, lora_disabled, precomputed or none")
        if self.reference == "lora_disabled" and self.lora_rank <= 0:
            raise FarmError("reference=lora_disabled needs lora_rank > 0", field="reference")
        for o in self.offload:
            if o not in ("reference", "reward"):
                raise FarmError(f"cannot offload {o!r}", field="offload", hint="reference or reward")
        if self.shard not in ("none", "ddp", "fsdp", "zero3"):
            raise FarmError(f"unknown shard {self.shard!r}", field="shard", hint="none, ddp, fsdp or zero3")


@dataclass
class Term:
    component: str
    bytes: float
    formula: str
    phase: str = "static"  # static (always resident) or the phase whose transient peak it belongs to


@dataclass
class Estimate:
    shape: Shape
    budget: Budget
    params: dict[str, int]
    terms: list[Term] = field(default_factory=list)
    phase_peaks: dict[str, float] = field(default_factory=dict)
    peak_bytes: float = 0.0
    cpu_offload_bytes: float = 0.0
    flops: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self):
        """The terms as a pandas DataFrame (component, phase, GiB, formula)."""
        import pandas as pd

        return pd.DataFrame([{"component": t.component, "phase": t.phase, "GiB": t.bytes / GiB,
                              "formula": t.formula} for t in self.terms])

    def to_dict(self) -> dict[str, Any]:
        return {"shape": asdict(self.shape), "budget": asdict(self.budget), "params": self.params,
                "terms": [asdict(t) for t in self.terms], "phase_peaks_bytes": self.phase_peaks,
                "peak_bytes": self.peak_bytes, "peak_gib": self.peak_bytes / GiB,
                "cpu_offload_bytes": self.cpu_offload_bytes, "flops": self.flops, "seconds": self.seconds}


def _fmt_n(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def activation_bytes(s: Shape, tokens: int, seqs: int, seq_len: int, d: int, attention: str) -> tuple[float, float]:
    """(checkpointed block inputs, full saved-for-backward bytes of all blocks) for `tokens` = seqs·seq_len
    tokens (see ACT_H, ACT_I)."""
    kv_dim = s.kv_heads * s.hd
    per_tok = (ACT_H * s.hidden + 2 * kv_dim + ACT_I * s.intermediate) * d
    if d < 4:
        per_tok += 2 * s.hidden * 4  # the two RMSNorms' fp32 upcasts
    per_layer = per_tok * tokens
    if attention == "eager":
        per_layer += 2 * seqs * s.heads * seq_len**2 * d  # softmax probabilities + scores
    return s.layers * s.hidden * d * tokens, s.layers * per_layer


def estimate(shape: Shape, budget: Budget) -> Estimate:
    """Memory terms, phase peaks and time of one optimizer step (and one epoch when `budget.examples`)."""
    s, b = shape, budget
    d = DTYPE_BYTES[b.precision]
    d_act = 2 if b.precision == "mixed" else d
    trained, seqs_per_ex, others = METHOD_MODELS[b.method]
    n_lm, n_scalar = s.n_params(lm_head=True), s.n_params(lm_head=False)
    n_lora = s.lora_params(b.lora_rank) if b.lora_rank > 0 else 0
    residents = ["policy"] + [o for o in others if not (o == "reference" and b.reference != "model")
                              and not (o == "reward" and not b.reward_model)]
    if b.method == "reward":
        residents = ["reward"]
    est = Estimate(s, b, {"policy": n_lm, "reward/value": n_scalar, "lora": n_lora})
    shard = b.devices if b.shard in ("fsdp", "zero3") else 1
    add = est.terms.append

    # Static: weights of every resident model and Adam states of the trained ones. Gradients are NOT static:
    # with zero_grad(set_to_none=True) and grad_accum = 1 they exist only from backward to the optimizer step,
    # when most activations are already freed; with grad_accum > 1 they live through the next forward.
    grads = 0.0
    for m in residents:
        n = n_scalar if m in ("reward", "value") else n_lm
        w = n * d / shard
        if m in b.offload:
            est.cpu_offload_bytes += n * d
            add(Term(f"{m} weights (offloaded; moved in to score)", w, f"{_fmt_n(n)}·{d}", phase="score"))
            continue
        add(Term(f"{m} weights", w, f"N·d = {_fmt_n(n)}·{d}" + (f" / {shard}" if shard > 1 else "")))
        if not (m == trained or m == "value"):
            continue
        lora = bool(n_lora) and m == "policy"
        n_train, dt = (n_lora, 4) if lora else (n, d)  # LoRA weights, grads and states stay fp32
        if lora:
            add(Term("policy LoRA weights", n_lora * 4, f"r·Σ(in+out)·4 = {_fmt_n(n_lora)}·4"))
        add(Term(f"{m} Adam states", 2 * n_train * dt / shard, f"2·trainable·d = 2·{_fmt_n(n_train)}·{dt}"))
        g = n_train * dt / shard
        grads += g
        train_phase = "value_train" if m == "value" else "train"
        add(Term(f"{m} grads", g, f"trainable·d = {_fmt_n(n_train)}·{dt}",
                 phase=train_phase if b.grad_accum > 1 else "step"))
        if b.device == "cuda":  # foreach AdamW (the CUDA default) makes whole-model temporaries
            add(Term(f"{m} optimizer-step temporaries", g, "one trainable-sized copy (foreach AdamW)", phase="step"))
        else:  # the per-tensor loop (the CPU default) makes temporaries of one tensor at a time
            big = max(s.vocab * s.hidden, s.hidden * s.intermediate) * dt if not lora else 0
            add(Term(f"{m} optimizer-step temporaries", big, "largest parameter tensor (for-loop AdamW)",
                     phase="step"))
        if b.precision == "mixed":
            add(Term(f"{m} bf16 autocast weight cache", n * 2 / shard, f"N·2 = {_fmt_n(n)}·2", phase="train"))

    # Train phase: activations + logits of one micro-batch of the trained model (and the value model).
    # Without checkpointing both are alive when backward starts. With it, the logits' backward finishes before
    # the first block is recomputed, so the peak is the block inputs + the larger of the two.
    T = b.prompt_len + b.response_len
    # dpo/ppo/rloo run the LM head on the response positions only (`logits_to_keep`); sft on every position
    T_logits = b.response_len + 1 if b.method in RESPONSE_ONLY_LOGITS else T
    seqs = b.batch_size * seqs_per_ex
    if trained != "none":
        ckpt, full = activation_bytes(s, seqs * T, seqs, T, d_act, b.attention)
        logits = 0.0
        if trained == "policy":
            up = d_act if d_act < 4 else 0  # .float() of bf16 logits is a copy; of fp32 ones a no-op
            logits = seqs * T_logits * s.vocab * (up + LOGIT_COPIES_TRAIN * 4)
        if b.grad_checkpointing:
            add(Term(f"{trained} block inputs (checkpointed)", ckpt, f"L·h·d·tokens = {s.layers}·{s.hidden}·"
                     f"{d_act}·{seqs * T}", phase="train"))
            add(Term("max(logits, one recomputed block)", max(logits, full / s.layers),
                     f"max({_fmt_n(logits)}, {_fmt_n(full / s.layers)}) bytes", phase="train"))
        else:
            per_tok = full / (s.layers * seqs * T)
            add(Term(f"{trained} activations", full, f"L·tokens·(7h+2kv+4I)·d{' + 8h' if d_act < 4 else ''} = "
                     f"{s.layers}·{seqs * T}·{_fmt_n(per_tok)} bytes", phase="train"))
            if logits:
                add(Term("policy logits", logits, f"B·T·V·({up} + {LOGIT_COPIES_TRAIN}·4) = {seqs}·{T_logits}·{s.vocab}·"
                         f"{up + 4 * LOGIT_COPIES_TRAIN}", phase="train"))
    if "value" in residents:  # the value model is updated after the policy: its own train phase
        ckpt, full = activation_bytes(s, seqs * T, seqs, T, d_act, b.attention)
        add(Term("value activations", ckpt + full / s.layers if b.grad_checkpointing else full,
                 "as the policy's, without logits", phase="value_train"))

    # Generate phase: KV cache of one generation batch (+ its last-position fp32 logits).
    gen_b = (b.gen_batch_size or b.batch_size) * b.samples_per_prompt
    if b.method in ("ppo", "rloo", "best_of_n", "expert_iteration"):
        # HF's DynamicCache grows by concatenation: one layer's old and new cache coexist for a moment (+1/L)
        kv = 2 * (s.layers + 1) * s.kv_heads * s.hd * T * gen_b * d_act
        add(Term("KV cache", kv, f"2·(L+1)·kv·hd·T·B_gen·d = 2·{s.layers + 1}·{s.kv_heads}·{s.hd}·{T}·{gen_b}·"
                 f"{d_act}", phase="generate"))
        add(Term("generation logits", gen_b * s.vocab * 4 * 2, "B_gen·V·4·2", phase="generate"))
    # Score phase: no-grad forward of reference/reward on one batch: full logits (reference) or one block.
    # (the bf16 logits, their fp32 copy and the log-softmax; with the policy's behaviour log-probs the same)
    if b.method != "reward" and any(m in residents for m in ("reference", "reward")):
        sb = b.score_batch_size or seqs
        lg = sb * T_logits * s.vocab * (d_act + 2 * 4) if "reference" in residents else 0
        add(Term("scoring forward transients", lg + sb * T * (4 * s.hidden + 2 * s.intermediate) * d_act,
                 f"B_score·T·(V·(d+8) if reference) + one block, B_score = {sb}", phase="score"))

    static = sum(t.bytes for t in est.terms if t.phase == "static")
    for phase in ("train", "step", "value_train", "generate", "score"):
        transient = sum(t.bytes for t in est.terms if t.phase == phase)
        if transient:
            est.phase_peaks[phase] = static + transient
    est.peak_bytes = max(est.phase_peaks.values(), default=static)
    _time(est, seqs, T, gen_b)
    return est


def _time(est: Estimate, seqs: int, T: int, gen_b: int) -> None:
    """FLOPs and seconds per optimizer step (all micro-batches, all devices) and per epoch."""
    s, b = est.shape, est.budget
    n_lm, n_sc = est.params["policy"], est.params["reward/value"]
    trained, _, _ = METHOD_MODELS[b.method]
    attn = 12 * s.layers * s.hidden * T  # per token, forward+backward (fwd 4·L·h·T, ×3)
    step_tokens = seqs * T * b.grad_accum * b.devices
    f: dict[str, float] = {}
    n_train = n_sc if trained == "reward" else n_lm
    # 6N = forward 2N + backward 4N (2N for activation grads, 2N for weight grads); LoRA skips the frozen
    # weights' grads (4N); checkpointing recomputes the forward (+2N).
    per_tok = (4 if b.lora_rank > 0 and trained == "policy" else 6) + (2 if b.grad_checkpointing else 0)
    epochs = b.ppo_epochs if b.method in ("ppo", "rloo") else 1
    if trained != "none":
        f["train"] = (per_tok * n_train + attn) * step_tokens * epochs
    if b.method == "ppo":
        f["train"] += ((6 + (2 if b.grad_checkpointing else 0)) * n_sc + attn) * step_tokens * epochs  # value
    gen_seqs = b.batch_size * b.grad_accum * b.devices * b.samples_per_prompt
    if b.method in ("ppo", "rloo", "best_of_n", "expert_iteration"):
        f["generate"] = 2 * n_lm * gen_seqs * T
        f["score"] = 2 * n_sc * gen_seqs * T * (2 if b.method == "ppo" else 1)  # reward (+ value)
    if b.reference == "model" and b.method in ("dpo", "ppo", "rloo"):
        f["score"] = f.get("score", 0) + 2 * n_lm * step_tokens * (2 if b.method == "dpo" else 1)
    est.flops = f
    rate = b.tflops * 1e12 * b.devices
    sec = {k: v / rate for k, v in f.items()}
    if "generate" in f:  # decoding: each of response_len steps reads the weights once per generation batch
        steps = b.response_len * math.ceil(gen_seqs / (gen_b * b.devices))
        mem_bound = steps * n_lm * DTYPE_BYTES[b.precision] / (b.bandwidth_gbps * 1e9)
        launch_bound = steps * s.layers * b.decode_ms_per_layer / 1e3
        sec["generate"] = max(sec["generate"], mem_bound, launch_bound)
    sec["step"] = sum(sec.values())
    if b.examples:
        per_step = b.batch_size * b.grad_accum * b.devices
        sec["epoch"] = sec["step"] * math.ceil(b.examples / per_step)
    est.seconds = sec


def calibrate_cpu(hidden: int = 256, layers: int = 2, seq_len: int = 128, batch: int = 4, steps: int = 3) -> float:
    """Achieved training TFLOP/s on this CPU, measured with a few fp32 forward+backward steps of a small Llama
    (6·N·tokens per step, attention included as in `estimate`)."""
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=seq_len)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 512, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    n = sum(p.numel() for p in model.parameters())
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
    dt = (time.perf_counter() - t0) / steps
    return (6 * n + 12 * layers * hidden * seq_len) * batch * seq_len / dt / 1e12


def format_estimate(est: Estimate) -> str:
    s, b = est.shape, est.budget
    lines = [f"model: h={s.hidden} L={s.layers} heads={s.heads}/{s.kv_heads} I={s.intermediate} V={s.vocab} "
             f"tied={s.tie_embeddings}",
             f"params: policy {_fmt_n(est.params['policy'])}, reward/value {_fmt_n(est.params['reward/value'])}"
             + (f", LoRA r={b.lora_rank}: {_fmt_n(est.params['lora'])}" if b.lora_rank else ""),
             f"method {b.method}: micro-batch {b.batch_size} × {b.prompt_len}+{b.response_len} tokens, "
             f"grad_accum {b.grad_accum}, {b.precision}, checkpointing {b.grad_checkpointing}, "
             f"reference {b.reference}, offload {list(b.offload) or 'none'}, {b.devices} device(s) {b.shard}",
             "", f"{'component':<40} {'phase':<9} {'GiB':>8}  formula"]
    for t in est.terms:
        lines.append(f"{t.component:<40} {t.phase:<9} {t.bytes / GiB:>8.3f}  {t.formula}")
    lines.append("")
    for phase, v in est.phase_peaks.items():
        lines.append(f"peak during {phase:<9} {v / GiB:8.2f} GiB")
    lines.append(f"PEAK per device        {est.peak_bytes / GiB:8.2f} GiB"
                 + (f"   (+ {est.cpu_offload_bytes / GiB:.2f} GiB CPU RAM for offloaded models)"
                    if est.cpu_offload_bytes else ""))
    lines.append("")
    lines.append(f"time at {b.tflops:g} TFLOP/s per device:")
    for k, v in est.seconds.items():
        extra = f"  ({est.flops[k]:.3g} FLOP)" if k in est.flops else ""
        lines.append(f"  {k:<9} {v:10.2f} s{extra}")
    return "\n".join(lines)


def _budget_args(p: argparse.ArgumentParser) -> None:
    """One flag per Budget field; default None so that only the flags given override a config's budget."""
    for f in fields(Budget):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(default, tuple):
            p.add_argument(flag, nargs="*", default=None)
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"(default {default})")


def _from_train_config(path: str, method: str | None) -> tuple[str, Any]:
    """(method, loaded Config) of a `farm train` YAML; the method from --method or the file's first line."""
    from farm.config import load_config
    from farm.methods import load_method

    first = Path(path).read_text().splitlines()[:1] if Path(path).exists() else []
    words = first[0].split() if first else []
    if method is None and "train" in words[:-1] and words[:1] == ["#"]:  # "# ... farm[.cli] train METHOD ..."
        method = words[words.index("train") + 1]
    if method is None:
        raise FarmError("cannot tell the method of this config", file=path, hint="add --method NAME")
    return method, load_config(load_method(method).Config, path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="farm estimate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help=f"known name ({', '.join(KNOWN_SHAPES)}), 'tiny', or a model folder "
                                            "(default with --train-config: the config's policy folder)")
    p.add_argument("--config-json", help="a HF config.json to read the shape from")
    p.add_argument("--train-config", help="a `farm train` YAML: batch sizes, lengths, dtype, epochs come from it "
                                          "(flags given here still win)")
    p.add_argument("--calibrate-cpu", action="store_true", help="measure this CPU's achieved TFLOP/s and use it")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    _budget_args(p)
    a = p.parse_args(argv)
    given = {f.name: getattr(a, f.name) for f in fields(Budget) if getattr(a, f.name) is not None}
    if "offload" in given:
        given["offload"] = tuple(given["offload"])
    if a.calibrate_cpu:
        given["tflops"] = calibrate_cpu()
    model = a.model
    if a.train_config:
        method, cfg = _from_train_config(a.train_config, given.pop("method", None))
        budget = budget_from_method_config(method, cfg, **given)
        model = model or (cfg.policy if not a.config_json else None)
    else:
        budget = Budget(**given)
    if not model and not a.config_json:
        raise FarmError("give a model (name, folder or 'tiny') or --config-json", field="model")
    est = estimate(resolve_shape(model, a.config_json), budget)
    print(json.dumps(est.to_dict(), indent=2) if a.json else format_estimate(est))
    return 0


def measure_peak_cpu(fn) -> int:
    """Peak bytes of torch tensors allocated on the CPU while `fn()` runs, from the profiler's allocator events
    (the CPU analogue of torch.cuda.max_memory_allocated: Python objects and library scratch are excluded,
    tensors alive before the call are not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == _cpu_device_type())
    current = peak = 0
    for _, n in events:
        current += n
        peak = max(peak, current)
    return peak


def _cpu_device_type():
    from torch._C._autograd import DeviceType

    return DeviceType.CPU


_PRECISION = {"bfloat16": "bf16", "bf16": "bf16", "float32": "fp32", "fp32": "fp32", "float16": "fp16",
              "fp16": "fp16"}


def budget_from_method_config(method: str, cfg: Any, **overrides: Any) -> Budget:
    """The Budget a `farm train <method>` config implies (one optimizer step = one iteration for ppo/rloo).
    dtype 'auto' is taken as bf16 on the GPU the estimate is for."""
    train = getattr(cfg, "train", None)
    src = train if train is not None else cfg
    kw: dict[str, Any] = {"method": method,
                          "precision": _PRECISION.get(str(getattr(src, "dtype", "auto")), "bf16"),
                          "grad_checkpointing": bool(getattr(src, "gradient_checkpointing", False))}
    if train is not None:  # sft, reward, dpo: the shared TrainConfig
        kw.update(batch_size=train.per_device_batch_size, grad_accum=train.grad_accum)
    if method in ("sft", "reward"):
        kw.update(prompt_len=cfg.max_len, response_len=0)
    elif method == "dpo":
        kw.update(prompt_len=cfg.max_prompt_tokens, response_len=cfg.max_response_tokens)
    elif method in ("ppo", "rloo"):
        rollouts = cfg.rollout_batch_size if method == "ppo" else cfg.prompts_per_step * cfg.k
        kw.update(batch_size=cfg.micro_batch_size, grad_accum=rollouts // cfg.micro_batch_size,
                  ppo_epochs=cfg.epochs, prompt_len=cfg.max_prompt_tokens, response_len=cfg.max_new_tokens,
                  # collect_rollout generates and scores in chunks of 64 (its batch_size default)
                  gen_batch_size=min(64, rollouts), score_batch_size=min(64, rollouts),
                  examples=cfg.steps * (cfg.rollout_batch_size if method == "ppo" else cfg.prompts_per_step))
    else:
        raise FarmError(f"no mapping from a '{method}' config to a token budget yet", field="method",
                        hint="give the budget with flags (--batch-size, --prompt-len, ...)")
    kw.update(overrides)
    return Budget(**kw)
