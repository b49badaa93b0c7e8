"""Completion backends: one prompt in, one `Completion` out (text, optional top logprobs, token counts).

Each backend lives in its own file and is imported only when a judge uses it, so `import farm` never needs
torch for an API judge or an API client for a local one. A backend raises `TransientError` (worth retrying),
`RejectedError` (this request will never succeed) or `FarmError` (every request would fail: bad key, unknown
model); see farm/annotators/retry.py. Backends hold their async client for the length of one `annotate` call
(`async with`), because async clients are bound to the event loop they were made in.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Protocol

from farm.annotators.config import JudgeConfig
from farm.annotators.parsers import Completion
from farm.errors import FarmError

# backend name → "module:class"; a class is built as Cls(config, folder)
BACKENDS: dict[str, str] = {
    "openai": "farm.annotators.backends.openai_chat:OpenAIChat",
    "openai_compatible": "farm.annotators.backends.openai_chat:OpenAIChat",
    "anthropic": "farm.annotators.backends.anthropic_messages:AnthropicMessages",
    "transformers": "farm.annotators.backends.local_transformers:TransformersBackend",
}


class Backend(Protocol):
    max_concurrency: int | None
    """a cap of the backend's own (a local model runs one prompt at a time), or None"""

    async def __aenter__(self) -> Backend: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def complete(self, system: str | None, prompt: str) -> Completion: ...


def make_backend(config: JudgeConfig, folder: Path) -> Backend:
    target = BACKENDS.get(config.backend)
    if target is None:
        raise FarmError(f"backend {config.backend!r} does not complete prompts", field="backend",
                        hint=f"prompt backends: {', '.join(BACKENDS)}")
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)(config, folder)


def resolve_api_key(config: JudgeConfig, default_env: str, base_url_env: str) -> str | None:
    """The key to pass to the official client, or None to let the client read `default_env` itself.

    `api_key_env` names another variable. A server of our own (a base_url in the config or the environment,
    or backend openai_compatible) may need no key: vLLM and Ollama accept any, so "EMPTY" is sent.
    """
    if config.api_key_env:
        return key_from_named_variable(config)
    if os.environ.get(default_env):
        return None
    if config.base_url or os.environ.get(base_url_env) or config.backend == "openai_compatible":
        return "EMPTY"
    raise FarmError(f"no API key: set {default_env} (or name another variable with api_key_env in the judge's "
                    f"config.yaml)", field="api_key_env")


def http_client(lib, config: JudgeConfig):
    """The official SDK's aiohttp transport (`lib.DefaultAioHttpClient`) when aiohttp is installed and the config
    allows it, else None (the SDK's default httpx2). aiohttp costs ~30% less CPU per request, which is what
    limits throughput at high concurrency on a small machine (bench/bench_annotate.py)."""
    if config.transport == "httpx":
        return None
    try:
        return lib.DefaultAioHttpClient()
    except (RuntimeError, ImportError, AttributeError):  # the SDK's own "install the aiohttp extra" error
        if config.transport == "aiohttp":
            raise FarmError("transport aiohttp needs the aiohttp package", field="transport",
                            hint="pip install aiohttp, or transport: auto") from None
        return None


def key_from_named_variable(config: JudgeConfig) -> str | None:
    """The value of the variable named by `api_key_env` (an error if it is unset), or None if none is named."""
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise FarmError(f"environment variable {config.api_key_env} is empty or not set",
                        field="api_key_env", hint=f"export {config.api_key_env}=... before running")
    return key


def as_text(content: object) -> str:
    """A message's content as text, whatever shape a server sent (None, a string, a list of text parts).

    >>> as_text(None), as_text("b"), as_text([{"type": "text", "text": "Output "}, {"text": "(b)"}, 3])
    ('', 'b', 'Output (b)')
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") if isinstance(p, dict) else as_text(getattr(p, "text", None))
                       for p in content)
    return str(content)


def count(value: object) -> int:
    """A token count as a server reported it (int, float, numeric string), or 0 when it is missing or garbage.

    >>> count(12), count(3.0), count("7"), count(None), count("many"), count(-4)
    (12, 3, 7, 0, 0, 0)
    """
    try:
        return max(0, int(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials, to scrub from anything we write."""
    marks = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    return [v for k, v in os.environ.items() if any(m in k.upper() for m in marks) and len(v) >= 8]


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` by '[redacted]'.

    >>> redact("Incorrect API key provided: sk-abcdefgh123", ["sk-abcdefgh123"])
    'Incorrect API key provided: [redacted]'
    """
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "[redacted]")
    return text


def classify_error(e: Exception, lib, key_hint: str) -> Exception:
    """Map an official client's exception (openai and anthropic share the names) to ours.

    Returns the exception to raise: TransientError, RejectedError or FarmError; anything unknown is returned
    unchanged (a bug worth seeing).
    """
    import json

    from farm.annotators.retry import TRANSIENT_STATUS, RejectedError, TransientError, parse_retry_after

    if isinstance(e, lib.APIStatusError):
        status = e.status_code
        # servers quote the rejected key back ("Incorrect API key provided: sk-..."): never keep it
        text = redact(f"HTTP {status}: {str(getattr(e, 'message', e))[:300]}", secret_values())
        if status in TRANSIENT_STATUS or status >= 500:
            headers = getattr(getattr(e, "response", None), "headers", None)
            return TransientError(text, parse_retry_after(dict(headers) if headers else None), status)
        if status in (401, 403):
            return FarmError(f"authentication failed ({text})", hint=key_hint)
        if status == 404:
            return FarmError(f"not found ({text})", field="model",
                             hint="check the model name and base_url (an OpenAI-compatible base_url ends in /v1)")
        return RejectedError(text)
    if isinstance(e, lib.APIConnectionError):  # includes timeouts
        return TransientError(redact(f"{type(e).__name__}: {e}", secret_values()))
    if isinstance(e, (json.JSONDecodeError, lib.APIResponseValidationError)):
        return TransientError(f"malformed response: {str(e)[:200]}")
    return e
