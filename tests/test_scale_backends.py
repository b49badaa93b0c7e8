"""LoRA with the reference as the disabled adapter, the vLLM guard, and the sampler/trainer log-prob check."""

import importlib.util

import pytest
import torch

from farm.errors import FarmError
from farm.methods.maths import masked_mean, response_logprobs
from farm.models.generation import format_prompt, generate
from farm.models.tiny import TinySpec, build_tiny_lm, train_tokenizer
from farm.models.vllm_backend import logprob_consistency, require_vllm, unpadded_logprobs

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"]
SPEC = TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64)
PROMPTS = [format_prompt("Sort: 1 2"), format_prompt("Sort: 3 1 2 and a much longer prompt with words"),
           format_prompt("Sort: b a")]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 300)


def _logprobs(model, g):
    return response_logprobs(model, g.prompt_ids, g.prompt_mask, g.response_ids, g.response_mask)


def test_disabled_adapter_is_the_reference_before_and_after_training(tok):
    pytest.importorskip("peft")
    from farm.models.lora import add_lora, reference_via_disabled_adapter, trainable_parameters

    base = build_tiny_lm(tok, SPEC, seed=0)
    g = generate(base, tok, PROMPTS, max_new_tokens=8, seed=0)
    with torch.no_grad():
        base_lp = _logprobs(base, g)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}

    policy = add_lora(build_tiny_lm(tok, SPEC, seed=0), rank=4)
    trainable, total = trainable_parameters(policy)
    assert 0 < trainable < total / 5
    # (a) at init LoRA's B = 0: adapter on and off give the same log-probs, equal to the base model's
    with torch.no_grad():
        on = _logprobs(policy, g)
    with reference_via_disabled_adapter(policy) as ref:
        off = _logprobs(ref, g)
        assert not torch.is_grad_enabled()
    m = g.response_mask.bool()
    torch.testing.assert_close(on[m], off[m], atol=1e-6, rtol=0)
    torch.testing.assert_close(off[m], base_lp[m], atol=1e-6, rtol=0)

    # (b) a few gradient steps change only LoRA parameters; the disabled adapter still equals the base model
    policy.train()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = -masked_mean(_logprobs(policy, g), g.response_mask.float())
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)  # B moved off zero: the policy really differs now
    with torch.no_grad():
        trained = _logprobs(policy, g)
    assert (trained[m] - base_lp[m]).abs().max() > 1e-3
    with reference_via_disabled_adapter(policy) as ref:
        off_after = _logprobs(ref, g)
    assert policy.training  # mode restored on exit
    torch.testing.assert_close(off_after[m], base_lp[m], atol=1e-6, rtol=0)
    # the base weights are bit-identical to before training
    base_after = policy.get_base_model().state_dict()
    for k, v in frozen.items():
        key = next(kk for kk in base_after if kk.endswith(k.replace(".weight", ".base_layer.weight"))
                   or kk == k)
        assert torch.equal(base_after[key], v), k


def test_reference_via_disabled_adapter_rejects_a_plain_model(tok):
    from farm.models.lora import reference_via_disabled_adapter

    with pytest.raises(FarmError, match="LoRA"):
        with reference_via_disabled_adapter(build_tiny_lm(tok, SPEC)):
            pass


def test_merged_copy_equals_adapter_output_and_leaves_policy_alone(tok):
    pytest.importorskip("peft")
    from farm.models.lora import add_lora, is_lora, merged_copy

    policy = add_lora(build_tiny_lm(tok, SPEC, seed=0), rank=4)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    g = generate(policy, tok, PROMPTS, max_new_tokens=6, seed=1)
    merged = merged_copy(policy)
    assert is_lora(policy) and not is_lora(merged)
    with torch.no_grad():
        torch.testing.assert_close(_logprobs(merged, g), _logprobs(policy, g), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_guard_names_the_package():
    with pytest.raises(FarmError, match="'vllm' package"):
        require_vllm()
    from farm.models.vllm_backend import VLLMGenerator

    with pytest.raises(FarmError, match="pip install vllm"):
        VLLMGenerator("some/model")


def test_logprob_consistency_same_model_passes_other_model_fails(tok):
    model = build_tiny_lm(tok, SPEC, seed=0)
    g = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=0.8, seed=0)
    # the "sampler" side: each sequence alone, no padding; the trainer side: batched and left-padded
    sampler = unpadded_logprobs(model, g, temperature=0.8)
    same = logprob_consistency(model, g, sampler, temperature=0.8, atol=1e-4)
    assert same["ok"] and same["max_abs_diff"] < 1e-4 and same["n_tokens"] == int(g.response_mask.sum())
    # a sampler at the wrong temperature, or a different model, is caught
    wrong_t = logprob_consistency(model, g, unpadded_logprobs(model, g, temperature=1.0), temperature=0.8)
    other = build_tiny_lm(tok, SPEC, seed=1)
    different = logprob_consistency(model, g, unpadded_logprobs(other, g, temperature=0.8), temperature=0.8)
    assert not wrong_t["ok"] and not different["ok"]
    assert different["max_abs_diff"] > 10 * same["max_abs_diff"]


def test_generation_from_token_lists_matches_generate_conventions(tok):
    from farm.models.generation import tokenize_prompts
    from farm.models.vllm_backend import generation_from_token_lists

    ids, mask = tokenize_prompts(tok, PROMPTS[:3])
    eos = tok.eos_token_id
    g = generation_from_token_lists(tok, ids, mask, [[5, 6, eos], [7, 8, 9, 10], []])
    assert g.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert g.truncated == [False, True, False]
    assert g.response_ids[0, 3] == tok.pad_token_id and g.response_ids[2, 0] == eos
