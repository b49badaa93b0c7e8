"""Anthropic messages through the official `anthropic` client (async).

Environment, as the official client reads it: ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN), ANTHROPIC_BASE_URL;
`base_url` / `api_key_env` in the judge config take precedence. No logprobs: use a text parser.
The current messages API (anthropic 2.x) has no `temperature`: the config's temperature is not sent; anything
an endpoint accepts beyond the client's arguments goes in `decoding: {extra_body: {...}}`.
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
    key_from_named_variable,
)
from farm.annotators.config import JudgeConfig
from farm.annotators.parsers import Completion
from farm.annotators.retry import TransientError
from farm.errors import FarmError

_KEY_HINT = "set ANTHROPIC_API_KEY or api_key_env in the judge config"


class AnthropicMessages:
    max_concurrency = None

    def __init__(self, config: JudgeConfig, folder: Path):
        if config.top_logprobs:
            raise FarmError("the anthropic backend returns no logprobs", field="top_logprobs",
                            hint="use parser: output_ab, final_verdict or ranking_json")
        if config.max_tokens is None:
            raise FarmError("the anthropic messages API needs max_tokens", field="max_tokens")
        self.config = config
        self.client = None
        self.secrets: list[str] = []
        self.url: str | None = config.base_url
        self.answered = False  # a response came back: the endpoint exists (connect errors become transient)

    async def __aenter__(self) -> AnthropicMessages:
        import anthropic

        key = key_from_named_variable(self.config)  # None: the client reads ANTHROPIC_API_KEY itself
        try:
            self.client = anthropic.AsyncAnthropic(api_key=key, base_url=self.config.base_url,
                                                   timeout=client_timeout(anthropic, self.config), max_retries=0,
                                                   default_headers=extra_headers(self.config) or None,
                                                   http_client=http_client(anthropic, self.config))
        except (anthropic.AnthropicError, ValueError) as e:
            raise FarmError(f"cannot create the Anthropic client: {e}", hint=_KEY_HINT) from None
        self.secrets = client_credentials(self.client, self.config)
        self.url = str(self.client.base_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def complete(self, system: str | None, prompt: str) -> Completion:
        import anthropic

        c = self.config
        kwargs = dict(c.decoding)
        if system:
            kwargs["system"] = system
        try:
            r = await self.client.messages.create(model=c.model, max_tokens=c.max_tokens,
                                                  messages=[{"role": "user", "content": prompt}], **kwargs)
        except TypeError as e:
            if "authentication" in str(e):  # the client's way of saying it found no key anywhere
                raise FarmError(f"no Anthropic credentials: {e}", field="api_key_env", hint=_KEY_HINT) from None
            raise FarmError(f"the anthropic client rejected an argument: {e}", field="decoding") from None
        except Exception as e:
            raise classify_error(e, anthropic, _KEY_HINT, self.secrets, self.url, self.answered) from None
        self.answered = True
        texts = [as_text(b.text) for b in (getattr(r, "content", None) or []) if getattr(b, "type", "") == "text"]
        usage = getattr(r, "usage", None)
        if not texts:
            raise TransientError("response has no text content",
                                 input_tokens=count(getattr(usage, "input_tokens", 0)),
                                 output_tokens=count(getattr(usage, "output_tokens", 0)))
        return Completion(
            text="".join(texts),
            input_tokens=count(getattr(usage, "input_tokens", 0)),
            output_tokens=count(getattr(usage, "output_tokens", 0)),
            meta={"finish_reason": getattr(r, "stop_reason", None)},
        )
