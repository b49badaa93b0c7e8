"""Optional generation through vLLM (Linux + CUDA; `pip install vllm`), returning the same `Generation` as
`farm.models.generation.generate`, plus the sampler's log-prob of every sampled token.

vLLM is never a hard dependency: this module imports it only inside functions and raises a FarmError naming
the package when it is absent. Why a consistency check: an RL method treats the sampler's log-probs as the
behaviour policy's. vLLM runs different kernels (paged attention, fused sampling, often bf16), so its
log-probs drift from the training forward's; PPO/RLOO must either recompute them with the training forward
(what farm's methods do) or at least know the drift. `logprob_consistency` measures it.

Departures and caveats (no GPU was lent when this was written: the vLLM path is UNTESTED here):
- prompts are tokenised by farm (left-truncated exactly as the HF path) and passed to vLLM as token ids;
- vLLM ≥ 0.10.2 returns raw (temperature-1) log-probs by default; we ask for `processed_logprobs` so they
  are the sampling distribution's, matching `response_logprobs(..., temperature)`;
- `sync_weights` copies a training policy into the running engine (colocated, one GPU); the attribute path
  inside vLLM changes between versions, so it tries the known ones and says so when none fits.
"""

from __future__ import annotations

from typing import Any

from farm.errors import FarmError
from farm.models.generation import Generation, decode_responses, response_mask_from_ids, tokenize_prompts


def require_vllm():
    """The `vllm` module, or a FarmError saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise FarmError("generation backend 'vllm' needs the 'vllm' package, which is not installed",
                        field="generation_backend",
                        hint="pip install vllm (Linux with a CUDA GPU), or use generation_backend=hf") from None
    return vllm


def generation_from_token_lists(tokenizer, prompt_ids, prompt_mask, responses: list[list[int]]) -> Generation:
    """A `Generation` from left-padded prompts and per-prompt lists of sampled token ids."""
    import torch

    R = max(1, max(len(r) for r in responses))
    response_ids = torch.full((len(responses), R), tokenizer.pad_token_id, dtype=torch.long)
    for i, r in enumerate(responses):
        if r:
            response_ids[i, : len(r)] = torch.tensor(r)
        else:  # an empty completion is an immediate EOS
            response_ids[i, 0] = tokenizer.eos_token_id
    response_mask = response_mask_from_ids(response_ids, tokenizer.eos_token_id)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    truncated = [not bool((row[m.bool()] == tokenizer.eos_token_id).any())
                 for row, m in zip(response_ids, response_mask)]
    texts = decode_responses(tokenizer, response_ids, response_mask)
    return Generation(prompt_ids, prompt_mask, response_ids, response_mask, texts, truncated)


class VLLMGenerator:
    """A vLLM engine for one model folder, sampling like `farm.models.generation.generate`.

    `gpu_memory_utilization` is the fraction of GPU memory vLLM reserves (weights + KV cache); when the
    training models share the GPU, leave them the rest (docs/scaling.md: 0.3-0.5 for a 0.5B PPO run).
    """

    def __init__(self, model_path: str, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.4,
                 max_model_len: int | None = None, seed: int = 0, **llm_kwargs: Any):
        vllm = require_vllm()
        kwargs = dict(model=str(model_path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                      seed=seed, logprobs_mode="processed_logprobs", **llm_kwargs)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)

    def generate(self, tokenizer, prompts: list[str], *, max_new_tokens: int = 32, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, greedy: bool = False, seed: int | None = None,
                 max_prompt_tokens: int | None = None):
        """(Generation, sampler log-probs (B, R) fp32, 0 after EOS) for one response per prompt."""
        import torch
        from vllm import SamplingParams

        prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, max_prompt_tokens)
        requests = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(prompt_ids, prompt_mask)]
        params = SamplingParams(n=1, temperature=0.0 if greedy else temperature, top_p=top_p,
                                top_k=top_k if top_k > 0 else -1, max_tokens=max_new_tokens, seed=seed,
                                logprobs=0, stop_token_ids=[tokenizer.eos_token_id], ignore_eos=False,
                                skip_special_tokens=True)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        responses = [list(o.outputs[0].token_ids) for o in outputs]
        gen = generation_from_token_lists(tokenizer, prompt_ids, prompt_mask, responses)
        logprobs = torch.zeros(gen.response_ids.shape, dtype=torch.float32)
        for i, o in enumerate(outputs):
            for t, (tok, lp) in enumerate(zip(o.outputs[0].token_ids, o.outputs[0].logprobs or [])):
                logprobs[i, t] = lp[tok].logprob
        return gen, logprobs * gen.response_mask

    def sync_weights(self, model) -> None:
        """Load a training model's current weights into the engine (same architecture, colocated)."""
        engine = self.llm.llm_engine
        for path in ("model_executor.driver_worker.worker.model_runner.model",
                     "model_executor.driver_worker.model_runner.model"):
            target = engine
            try:
                for part in path.split("."):
                    target = getattr(target, part)
            except AttributeError:
                continue
            target.load_weights(model.state_dict().items())
            return
        raise FarmError("cannot reach the model inside this vLLM version to load weights",
                        hint="reload the engine from a saved checkpoint instead (slower)")


def logprob_consistency(model, gen: Generation, sampler_logprobs, *, temperature: float = 1.0,
                        atol: float = 0.05) -> dict[str, float | bool | int]:
    """Compare a sampler's log-probs of the sampled tokens (B, R) with the training forward's
    (`farm.models.logprobs.response_logprobs`) on the tokens where `gen.response_mask` is 1.

    Returns max_abs_diff, mean_abs_diff, n_tokens and ok (max_abs_diff <= atol). Typical values: fp32 on the
    same weights ~1e-5; bf16 vLLM vs bf16 HF ~1e-2 mean with a max of a few tenths on rare tokens.
    """
    import torch

    from farm.models.logprobs import response_logprobs

    device = next(model.parameters()).device
    with torch.no_grad():
        lp = response_logprobs(model, gen.prompt_ids.to(device), gen.prompt_mask.to(device),
                               gen.response_ids.to(device), gen.response_mask.to(device), temperature).float().cpu()
    mask = gen.response_mask.bool()
    diff = (lp - sampler_logprobs.float().cpu()).abs()[mask]
    n = int(mask.sum())
    max_diff = float(diff.max()) if n else 0.0
    return {"max_abs_diff": max_diff, "mean_abs_diff": float(diff.mean()) if n else 0.0, "n_tokens": n,
            "ok": max_diff <= atol}


def unpadded_logprobs(model, gen: Generation, temperature: float = 1.0):
    """Log-probs (B, R) of the sampled tokens, one sequence at a time with no padding at all: an independent
    reference for the batched, left-padded training forward (and a stand-in sampler when vLLM is absent)."""
    import torch

    from farm.models.logprobs import logprobs_from_logits

    device = next(model.parameters()).device
    out = torch.zeros(gen.response_ids.shape, dtype=torch.float32)
    with torch.no_grad():
        for i in range(gen.response_ids.shape[0]):
            prompt = gen.prompt_ids[i][gen.prompt_mask[i].bool()]
            n = int(gen.response_mask[i].sum())
            ids = torch.cat([prompt, gen.response_ids[i, :n]]).unsqueeze(0).to(device)
            logits = model(input_ids=ids).logits[:, len(prompt) - 1:-1]
            out[i, :n] = logprobs_from_logits(logits, ids[:, len(prompt):], temperature)[0].cpu()
    return out
