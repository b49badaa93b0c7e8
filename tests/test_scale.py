"""farm estimate: exact parameter counts, the memory model against MEASURED peak memory of tiny models, levers,
the CLI, and the accelerate configs."""

import json
from pathlib import Path

import pytest
import torch

from farm.errors import FarmError
from farm.methods.maths import logprobs_from_logits, masked_mean
from farm.models.tiny import TinySpec, build_tiny_lm, train_tokenizer
from farm.scale import KNOWN_SHAPES, Budget, Shape, estimate, main, measure_peak_cpu, resolve_shape

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"Sort: {a} {b} {c} -> {' '.join(sorted([a, b, c]))} the quick brown fox {a}{b}"
         for a in "123456" for b in "789" for c in "0ab"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, 400)


def _hf_config(shape: Shape):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                  num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate, vocab_size=shape.vocab,
                  tie_word_embeddings=shape.tie_embeddings)
    return Qwen2Config(**common) if shape.qkv_bias else LlamaConfig(**common, head_dim=shape.hd)


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama-3.1-8b", "smollm2-135m"])
def test_parameter_count_is_exact_for_known_architectures(name):
    from transformers import AutoModelForCausalLM

    shape = resolve_shape(name)
    with torch.device("meta"):  # no memory: only shapes
        model = AutoModelForCausalLM.from_config(_hf_config(shape))
    assert shape.n_params() == sum(p.numel() for p in model.parameters())


def test_published_sizes():
    # model cards: Qwen2.5-0.5B 0.49B, Llama-3.1-8B 8.03B, LLaMA-7B 6.74B
    assert round(resolve_shape("qwen2.5-0.5b").n_params() / 1e9, 2) == 0.49
    assert round(resolve_shape("llama-3.1-8b").n_params() / 1e9, 2) == 8.03
    assert round(resolve_shape("llama-7b").n_params() / 1e9, 2) == 6.74


def test_shape_from_folder_and_lora_count_match_the_real_models(tmp_path, tokenizer):
    from farm.models.loading import save_model
    from farm.models.lora import add_lora, trainable_parameters

    model = build_tiny_lm(tokenizer, TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64))
    save_model(model, tokenizer, tmp_path / "m")
    shape = resolve_shape(str(tmp_path / "m"))
    assert shape == resolve_shape(None, config_json=str(tmp_path / "m" / "config.json"))
    assert shape.n_params() == sum(p.numel() for p in model.parameters())
    trainable, _ = trainable_parameters(add_lora(model, rank=4))
    assert shape.lora_params(4) == trainable


def _train_steps(model, B: int, T: int, steps: int = 2) -> None:
    """What every policy-gradient/SFT step does: forward, fp32 log-probs of the tokens, backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):  # step 2's forward runs with Adam states allocated
        ids = torch.randint(4, model.config.vocab_size, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = -masked_mean(logprobs_from_logits(logits, ids[:, 1:]), mask[:, 1:].float())
        del logits
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


# (spec, batch, tokens, precision, checkpointing): activation/logit-bound, checkpointed, weight/Adam-bound
# (peak at the optimizer step), and bf16 (slow on CPU only because bf16 kernels warm up for ~10 s).
MEASURED_CASES = {
    "small-fp32": (TinySpec(n_layers=2, hidden=64, heads=4, intermediate=172), 8, 128, "fp32", False),
    "medium-checkpointed": (TinySpec(n_layers=4, hidden=128, heads=4, intermediate=344), 8, 128, "fp32", True),
    "wide-fp32": (TinySpec(n_layers=2, hidden=384, heads=6, intermediate=1024), 2, 32, "fp32", False),
    "large-bf16": (TinySpec(n_layers=4, hidden=512, heads=8, intermediate=1376), 2, 64, "bf16", False),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if "bf16" in c else c
                                  for c in MEASURED_CASES])
def test_estimated_peak_matches_measured_peak_within_30_percent(case, tokenizer):
    spec, B, T, precision, ckpt = MEASURED_CASES[case]
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16

    def run():
        model = build_tiny_lm(tokenizer, spec).to(dtype)
        if ckpt:
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        model.train()
        _train_steps(model, B, T)

    measured = measure_peak_cpu(run)
    shape = Shape(spec.hidden, spec.n_layers, spec.heads, spec.heads, spec.intermediate, len(tokenizer),
                  spec.tie_embeddings)
    est = estimate(shape, Budget(method="sft", batch_size=B, prompt_len=T, response_len=0, precision=precision,
                                 grad_checkpointing=ckpt, device="cpu"))
    ratio = est.peak_bytes / measured
    print(f"{case}: measured {measured / 1e6:.2f} MB, estimated {est.peak_bytes / 1e6:.2f} MB, ratio {ratio:.2f}")
    assert measured > 5e6  # the measurement saw the training tensors, not just noise
    assert 0.7 <= ratio <= 1.3


def test_measure_peak_cpu_counts_live_tensors_only():
    def f():
        a = torch.empty(1000, 1000)  # 4 MB
        b = torch.empty(500, 1000)  # +2 MB → 6 MB
        del a
        c = torch.empty(1500, 1000)  # 2 + 6 = 8 MB
        del b, c

    assert measure_peak_cpu(f) == 8_000_000


def test_levers_lower_the_peak_in_the_expected_direction():
    shape = resolve_shape("qwen2.5-0.5b")
    full = estimate(shape, Budget(method="ppo", batch_size=8))
    lora = estimate(shape, Budget(method="ppo", batch_size=8, lora_rank=16, reference="lora_disabled"))
    ckpt = estimate(shape, Budget(method="ppo", batch_size=8, grad_checkpointing=True))
    offload = estimate(shape, Budget(method="ppo", batch_size=8, offload=("reference", "reward")))
    assert lora.peak_bytes < full.peak_bytes and ckpt.peak_bytes < full.peak_bytes
    assert offload.phase_peaks["train"] < full.phase_peaks["train"] and offload.cpu_offload_bytes > 0
    names = {t.component for t in lora.terms}
    assert "reference weights" not in names and "policy grads" in names
    zero3 = estimate(shape, Budget(method="sft", devices=8, shard="zero3"))
    ddp = estimate(shape, Budget(method="sft", devices=8, shard="ddp"))
    w_zero3, w_ddp = (next(t.bytes for t in e.terms if t.component == "policy weights") for e in (zero3, ddp))
    assert w_zero3 * 8 == pytest.approx(w_ddp)


def test_time_is_six_n_tokens_plus_attention_worked_by_hand():
    # h=64, L=2, heads=4, I=128, V=100, tied: embed 6400 + per block (4·64² + 3·64·128 + 2·64 = 41088)·2 + 64
    shape = Shape(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=100)
    assert shape.n_params() == 6400 + 2 * 41088 + 64 == 88640
    est = estimate(shape, Budget(method="sft", batch_size=2, prompt_len=10, response_len=6, tflops=1e-6))
    # tokens = 2·16 = 32; per token 6·88640 + 12·2·64·16 = 531840 + 24576 = 556416 → 17805312 FLOP
    assert est.flops["train"] == 17_805_312
    assert est.seconds["train"] == pytest.approx(17_805_312 / 1e6)


def test_cli_prints_table_and_json(capsys, tmp_path):
    assert main(["qwen2.5-0.5b", "--method", "ppo", "--lora-rank", "16", "--reference", "lora_disabled"]) == 0
    out = capsys.readouterr().out
    assert "PEAK per device" in out and "policy LoRA weights" in out
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": True}))
    assert main(["--config-json", str(cfg), "--json", "--batch-size", "2", "--prompt-len", "10",
                 "--response-len", "6"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["policy"] == 88640 and data["peak_bytes"] > 0


@pytest.mark.parametrize("bad", [["qwen2.5-0.5b", "--method", "grpo"], ["no-such-model"],
                                 ["qwen2.5-0.5b", "--reference", "lora_disabled"]])
def test_cli_user_errors_are_farm_errors(bad):
    with pytest.raises(FarmError):
        main(bad)


def test_known_shapes_are_all_valid():
    for name in KNOWN_SHAPES:
        assert resolve_shape(name).n_params() > 1e8


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")))
def test_accelerate_configs_load_and_name_their_command(path):
    from accelerate.commands.config.config_args import ClusterConfig

    first = path.read_text().splitlines()[0]
    assert first.startswith("# accelerate launch --config_file configs/accelerate/" + path.name)
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.num_processes >= 1 and cfg.mixed_precision == "bf16"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("gpu_*.yaml")), ids=lambda p: p.name)
def test_gpu_run_configs_load_into_their_methods_config(path):
    from farm.config import load_config
    from farm.methods import load_method

    first = path.read_text().splitlines()[0].split()  # "# [accelerate launch ... -m farm.cli |farm] train M ..."
    assert first[0] == "#" and "train" in first
    method = first[first.index("train") + 1]
    assert first[first.index("train") + 2:first.index("train") + 4] == ["--config", f"configs/{path.name}"]
    cfg = load_config(load_method(method).Config, path)  # unknown keys or wrong types raise here
    device = getattr(cfg, "device", None) or cfg.train.device
    assert device == "cuda"


def test_budget_from_a_train_config_and_flags_that_win(capsys):
    from farm.config import load_config
    from farm.methods import load_method
    from farm.scale import budget_from_method_config

    path = ROOT / "configs" / "gpu_qwen05b_ppo.yaml"
    cfg = load_config(load_method("ppo").Config, path)
    b = budget_from_method_config("ppo", cfg)
    assert (b.batch_size, b.grad_accum, b.ppo_epochs) == (cfg.micro_batch_size,
                                                          cfg.rollout_batch_size // cfg.micro_batch_size, cfg.epochs)
    assert (b.prompt_len, b.response_len) == (cfg.max_prompt_tokens, cfg.max_new_tokens)
    assert b.precision == {"float32": "fp32", "bfloat16": "bf16"}[cfg.train.dtype]
    assert b.examples == cfg.steps * cfg.rollout_batch_size
    assert main(["qwen2.5-0.5b", "--train-config", str(path), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["qwen2.5-0.5b", "--train-config", str(path), "--score-batch-size", "16", "--json"]) == 0
    smaller = json.loads(capsys.readouterr().out)
    assert from_file["budget"]["batch_size"] == cfg.micro_batch_size
    assert smaller["budget"]["score_batch_size"] == 16 and smaller["peak_bytes"] < from_file["peak_bytes"]


def _llama(V: int, h: int, L: int, I: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=h, num_hidden_layers=L, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=I, max_position_embeddings=256,
                                        tie_word_embeddings=True)).eval()


def test_scoring_and_generation_phases_match_measured_peaks():
    """No-grad reference scoring (the methods' response-only log-probs) and KV-cache sampling, measured."""
    from farm.methods.rollout import response_logprobs_tail

    V, h, L, I, B, P, R = 4000, 64, 2, 172, 16, 48, 40
    shape = Shape(h, L, 4, 4, I, V)
    g = torch.Generator().manual_seed(0)
    prompts, responses = torch.randint(4, V, (B, P), generator=g), torch.randint(4, V, (B, R), generator=g)

    def score():
        with torch.no_grad():
            response_logprobs_tail(_llama(V, h, L, I), prompts, torch.ones_like(prompts), responses,
                                   torch.ones_like(responses))

    def sample():
        with torch.no_grad():
            _llama(V, h, L, I).generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                        max_new_tokens=R, min_new_tokens=R, top_k=0, pad_token_id=0, eos_token_id=1)

    budget = dict(batch_size=B, prompt_len=P, response_len=R, precision="fp32", device="cpu")
    est = estimate(shape, Budget(method="dpo", score_batch_size=B, **budget))
    weights = shape.n_params() * 4
    predicted = {"score": weights + next(t.bytes for t in est.terms if t.phase == "score")}
    est = estimate(shape, Budget(method="best_of_n", **budget))
    predicted["generate"] = weights + sum(t.bytes for t in est.terms if t.phase == "generate")
    for phase, fn in (("score", score), ("generate", sample)):
        measured = measure_peak_cpu(fn)
        print(f"{phase}: measured {measured / 1e6:.2f} MB, estimated {predicted[phase] / 1e6:.2f} MB")
        assert 0.7 <= predicted[phase] / measured <= 1.3, phase


def test_a_function_scorer_needs_no_resident_reward_model():
    shape = resolve_shape("smollm2-135m")
    with_rm = estimate(shape, Budget(method="rloo", batch_size=8, prompt_len=64, response_len=16, precision="fp32",
                                     device="cpu"))
    without = estimate(shape, Budget(method="rloo", batch_size=8, prompt_len=64, response_len=16, precision="fp32",
                                     device="cpu", reward_model=False))
    names = {t.component for t in without.terms}
    assert "reward weights" in {t.component for t in with_rm.terms} and "reward weights" not in names
    assert with_rm.peak_bytes - without.peak_bytes >= shape.n_params(lm_head=False) * 4 * 0.99
