"""OpenAI chat completions through the official `openai` client (async), for OpenAI itself and for any
OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI...) at `base_url`.

Environment, as the official client reads it: OPENAI_API_KEY, OPENAI_BASE_URL (a `base_url` or `api_key_env`
in the judge config takes precedence). The client's own retries are off (max_retries=0): ours honour
Retry-After the same way and are counted per run.
"""

from __future__ import annotations

from pathlib import Path

from farm.annotators.backends import (
    as_text,
    classify_error,
    client_credentials,
    client_timeout,
    count,
    extra_headers,
    http_client,
    resolve_api_key,
)
from farm.annotators.config import JudgeConfig
from farm.annotators.parsers import Completion
from farm.annotators.retry import TransientError
from farm.errors import FarmError

_KEY_HINT = "set OPENAI_API_KEY or api_key_env in the judge config"


class OpenAIChat:
    max_concurrency = None

    def __init__(self, config: JudgeConfig, folder: Path):
        self.config = config
        self.client = None
        self.secrets: list[str] = []
        self.url: str | None = config.base_url
        self.answered = False  # a response came back: the endpoint exists (connect errors become transient)

    async def __aenter__(self) -> OpenAIChat:
        import openai

        key = resolve_api_key(self.config, "OPENAI_API_KEY", "OPENAI_BASE_URL")
        try:
            self.client = openai.AsyncOpenAI(api_key=key, base_url=self.config.base_url,
                                             timeout=client_timeout(openai, self.config), max_retries=0,
                                             default_headers=extra_headers(self.config) or None,
                                             http_client=http_client(openai, self.config))
        except openai.OpenAIError as e:
            raise FarmError(f"cannot create the OpenAI client: {e}", field="api_key_env") from None
        self.secrets = client_credentials(self.client, self.config)
        self.url = str(self.client.base_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def complete(self, system: str | None, prompt: str) -> Completion:
        import openai

        c = self.config
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        kwargs = dict(c.decoding)
        if c.max_tokens is not None:
            kwargs.setdefault("max_tokens", c.max_tokens)
        if c.top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=c.top_logprobs)
        try:
            r = await self.client.chat.completions.create(model=c.model, messages=messages,
                                                          temperature=c.temperature, **kwargs)
        except TypeError as e:  # an unknown argument in `decoding`
            raise FarmError(f"the openai client rejected an argument: {e}", field="decoding") from None
        except Exception as e:
            raise classify_error(e, openai, _KEY_HINT, self.secrets, self.url, self.answered) from None
        self.answered = True
        usage = getattr(r, "usage", None)
        if not getattr(r, "choices", None):
            raise TransientError("response has no choices", input_tokens=count(getattr(usage, "prompt_tokens", 0)),
                                 output_tokens=count(getattr(usage, "completion_tokens", 0)))
        choice = r.choices[0]
        top = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if content:
            top = [{t.token: t.logprob for t in (pos.top_logprobs or [])} or {pos.token: pos.logprob}
                   for pos in content]
        message = choice.message
        # a refusal has no content: keep its text as the raw answer (it parses as invalid, then is re-asked)
        text = (as_text(message.content) or as_text(getattr(message, "refusal", None))) if message else ""
        return Completion(
            text=text,
            top_logprobs=top,
            input_tokens=count(getattr(usage, "prompt_tokens", 0)),
            output_tokens=count(getattr(usage, "completion_tokens", 0)),
            meta={"finish_reason": getattr(choice, "finish_reason", None)},
        )
