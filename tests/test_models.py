"""Tiny local models: tokenizer (pad ≠ eos), save/load, left-padded generation, log-prob consistency."""

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
