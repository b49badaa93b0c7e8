"""Tiny local models: tokenizer (pad ≠ eos), save/load, left-padded generation, log-prob consistency."""

import pytest
import torch

from farm.methods.maths import response_logprobs
from farm.models.generation import format_prompt, generate, tokenize_prompts
from farm.models.loading import is_complete_checkpoint, load_causal_lm, load_scalar_model, scalar_values
from farm.models.tiny import TinySpec, build_tiny

TEXTS = [f"### Instruction:\nSort: {a} {b} {c}\n\n### Response:\n{' '.join(sorted([a, b, c]))}"
         for a in "123456" for b in "789" for c in "0ab"]


def _tiny(tmp_path):
    path = build_tiny(TEXTS, tmp_path / "tiny", TinySpec(n_layers=2, hidden=32, heads=2, intermediate=64,
                                                         vocab_size=300), seed=0)
    return load_causal_lm(str(path), device="cpu")


def test_tokenizer_pad_is_not_eos_and_round_trips(tmp_path):
    model, tok = _tiny(tmp_path)
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.decode(tok("Sort: 3 1 é")["input_ids"]) == "Sort: 3 1 é"
    assert is_complete_checkpoint(tmp_path / "tiny")


def test_generation_left_pads_and_logprobs_match_sampler(tmp_path):
    model, tok = _tiny(tmp_path)
    prompts = [format_prompt("Sort: 1 2"), format_prompt("Sort: 3 1 2 and then some more words here")]
    ids, mask = tokenize_prompts(tok, prompts)
    assert mask[0, 0] == 0 and mask[:, -1].all()  # left padding
    g = generate(model, tok, prompts, max_new_tokens=12, temperature=0.7, seed=0)
    assert g.response_ids.shape[0] == 2 and len(g.texts) == 2
    # the same seed gives the same samples
    g2 = generate(model, tok, prompts, max_new_tokens=12, temperature=0.7, seed=0)
    assert torch.equal(g.response_ids, g2.response_ids)
    # the padded prompt gives the same log-probs as the unpadded one (position ids follow the mask)
    lp_batch = response_logprobs(model, g.prompt_ids, g.prompt_mask, g.response_ids, g.response_mask, 0.7)
    n0 = int(g.prompt_mask[0].sum())
    lp_alone = response_logprobs(model, g.prompt_ids[:1, -n0:], g.prompt_mask[:1, -n0:], g.response_ids[:1],
                                 g.response_mask[:1], 0.7)
    m = g.response_mask[0].bool()
    torch.testing.assert_close(lp_batch[0][m], lp_alone[0][m], atol=1e-5, rtol=1e-5)


def test_greedy_generation_agrees_with_argmax_of_forward(tmp_path):
    model, tok = _tiny(tmp_path)
    g = generate(model, tok, [format_prompt("Sort: 5 7")], max_new_tokens=6, greedy=True)
    ids = torch.cat([g.prompt_ids, g.response_ids], 1)
    logits = model(ids).logits[0, g.prompt_ids.shape[1] - 1:-1]
    n = int(g.response_mask[0].sum())
    assert logits.argmax(-1)[:n].tolist() == g.response_ids[0, :n].tolist()


def test_a_few_sft_steps_reduce_loss(tmp_path):
    model, tok = _tiny(tmp_path)
    batch = tok(TEXTS[:16], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_scalar_model_from_causal_lm_starts_at_zero(tmp_path):
    _tiny(tmp_path)
    rm, tok = load_scalar_model(str(tmp_path / "tiny"), device="cpu")
    ids, mask = tokenize_prompts(tok, ["Sort: 1 2", "Sort: 3 1 2 9"])
    v = scalar_values(rm, ids, mask)
    assert v.shape == ids.shape and torch.all(v == 0)


def _gqa_lm(tmp_path, kv_heads: int = 2):
    """A tiny Llama with grouped-query attention (4 query heads share 2 key/value heads), as SmolLM2 has."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from farm.models.loading import save_model
    from farm.models.tiny import train_tokenizer

    tok = train_tokenizer(TEXTS, 300)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    save_model(LlamaForCausalLM(config), tok, tmp_path / "gqa")
    return load_causal_lm(str(tmp_path / "gqa"), device="cpu")


PROMPTS = [format_prompt("Sort: 1 2"), format_prompt("Sort: 3 1 2 and then some more words here"), "x"]


def test_lean_sampler_draws_the_same_tokens_as_transformers_generate(tmp_path):
    """farm/models/fast_decode.py against model.generate on the same seeds: sampled at two temperatures and
    greedy, left-padded prompts of different lengths, multi-query and grouped-query attention."""
    for model, tok in (_tiny(tmp_path), _gqa_lm(tmp_path)):
        for kw in ({"temperature": 1.0}, {"temperature": 0.7}, {"greedy": True}):
            lean = generate(model, tok, PROMPTS * 3, max_new_tokens=12, seed=5, **kw)
            hf = generate(model, tok, PROMPTS * 3, max_new_tokens=12, seed=5, engine="hf", **kw)
            assert torch.equal(lean.response_ids, hf.response_ids), kw
            assert lean.texts == hf.texts and lean.truncated == hf.truncated


def test_lean_sampler_stops_rows_at_eos_like_generate(tmp_path):
    from farm.models import fast_decode

    model, tok = _gqa_lm(tmp_path)
    model.eval()
    ids, mask = tokenize_prompts(tok, PROMPTS)
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask,
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1].argmax(-1)
        eos = int(first[0])  # row 0's first greedy token plays EOS: row 0 stops at once, the others go on
        lean = fast_decode.sample(model, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=0, greedy=True)
        hf = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=eos,
                            pad_token_id=0)[:, ids.shape[1]:]
    assert torch.equal(lean, hf)
    assert lean[0, 0] == eos and (lean[0, 1:] == 0).all()


def test_lean_sampler_runs_lora_adapters_and_falls_back_where_it_would_differ(tmp_path):
    import pytest

    pytest.importorskip("peft")
    from farm.models import fast_decode
    from farm.models.lora import add_lora

    model, tok = _gqa_lm(tmp_path)
    model = add_lora(model, rank=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # an adapter that changes the outputs
    lean = generate(model, tok, PROMPTS, max_new_tokens=10, seed=1)
    hf = generate(model, tok, PROMPTS, max_new_tokens=10, seed=1, engine="hf")
    assert torch.equal(lean.response_ids, hf.response_ids)
    assert fast_decode.supports(model)
    assert not fast_decode.supports(model, top_k=5) and not fast_decode.supports(model, top_p=0.9)
    model.get_base_model().generation_config.repetition_penalty = 1.2
    assert not fast_decode.supports(model)  # generate would apply it; the lean loop would not


def test_continuations_sharing_one_prompt_pass_equal_whole_rows_in_values_and_gradients(tmp_path):
    """farm/models/shared_prefix.py: chosen and rejected (DPO) or k samples (RLOO) after one prompt forward."""
    from farm.methods.maths import response_logprobs
    from farm.models.shared_prefix import continuation_logprobs

    model, tok = _gqa_lm(tmp_path)
    model.train()
    for m in model.modules():  # no dropout: the two paths must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    pids, pmask = tokenize_prompts(tok, PROMPTS)
    conts = []
    for texts in (["1 2", "a longer answer here", "z"], ["no", "x y", "the other one, longer still"]):
        enc = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        R = max(len(e) for e in enc)
        ids = torch.tensor([e + [tok.pad_token_id] * (R - len(e)) for e in enc])
        conts.append((ids, (torch.arange(R)[None] < torch.tensor([len(e) for e in enc])[:, None]).long()))
    shared = continuation_logprobs(model, pids, pmask, conts, temperature=0.7)
    loss_shared = sum((lp * m).sum() for lp, (_, m) in zip(shared, conts))
    g_shared = torch.autograd.grad(loss_shared, [p for p in model.parameters()])
    whole = [response_logprobs(model, pids, pmask, ids, m, 0.7) for ids, m in conts]
    for a, b, (_, m) in zip(shared, whole, conts):
        torch.testing.assert_close(a * m, b * m, atol=1e-5, rtol=1e-5)
    loss_whole = sum((lp * m).sum() for lp, (_, m) in zip(whole, conts))
    g_whole = torch.autograd.grad(loss_whole, [p for p in model.parameters()])
    for a, b in zip(g_shared, g_whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["body_and_head", "own_forward"])
def test_a_detached_continuation_has_whole_row_values_no_gradient_and_leaves_the_others_gradient_alone(
        tmp_path, monkeypatch, path):
    """KTO's mismatched answers: scored after the same prompt pass, as constants (`detached=1`)."""
    from farm.methods.maths import response_logprobs
    from farm.models import shared_prefix

    if path == "own_forward":  # the route of models that are not Llama-family: through their own forward
        monkeypatch.setattr(shared_prefix, "_body_and_head", lambda lm: False)
    model, tok = _gqa_lm(tmp_path)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    pids, pmask = tokenize_prompts(tok, PROMPTS)
    conts = []
    for texts in (["1 2", "a longer answer here", "z"], ["no", "x y", "the other one, longer still"]):
        enc = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        R = max(len(e) for e in enc)
        ids = torch.tensor([e + [tok.pad_token_id] * (R - len(e)) for e in enc])
        conts.append((ids, (torch.arange(R)[None] < torch.tensor([len(e) for e in enc])[:, None]).long()))
    live, const = shared_prefix.continuation_logprobs(model, pids, pmask, conts, detached=1)
    assert live.requires_grad and not const.requires_grad
    whole = [response_logprobs(model, pids, pmask, ids, m) for ids, m in conts]
    for a, b, (_, m) in zip((live, const), whole, conts):
        torch.testing.assert_close(a * m, b * m, atol=1e-5, rtol=1e-5)
    params = list(model.parameters())
    g_live = torch.autograd.grad((live * conts[0][1]).sum(), params)
    g_whole = torch.autograd.grad((whole[0] * conts[0][1]).sum(), params)
    for a, b in zip(g_live, g_whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="detached"):
        shared_prefix.continuation_logprobs(model, pids, pmask, conts, detached=3)


def test_a_tokenizer_whose_pad_is_eos_gets_a_spare_token_and_a_new_pad_row_is_zero(tmp_path):
    from farm.models.loading import grow_embeddings, load_tokenizer, pick_dtype, save_model
    from farm.models.tiny import build_tiny_lm, train_tokenizer

    tok = train_tokenizer(TEXTS, 300)
    tok.pad_token = tok.eos_token  # as SmolLM2's tokenizer ships
    save_model(build_tiny_lm(tok, TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64)), tok, tmp_path / "m")
    again = load_tokenizer(str(tmp_path / "m"))
    assert again.pad_token == "<unk>" and again.pad_token_id != again.eos_token_id and len(again) == len(tok)
    model = build_tiny_lm(tok, TinySpec(n_layers=1, hidden=32, heads=2, intermediate=64))
    n = model.get_input_embeddings().num_embeddings
    grow_embeddings(model, n + 1)  # an added <pad>: its row is zero, so two loads give the same network
    assert model.get_input_embeddings().weight[n:].abs().sum() == 0
    assert pick_dtype("fp32") == torch.float32 and pick_dtype("fast", "cpu") in (torch.float32, torch.bfloat16)
