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
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from farm.annotators.config import JudgeConfig
from farm.annotators.parsers import Completion
from farm.annotators.secrets import env_secrets, redact
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
    secrets: list[str]
    """what the client sends as credentials (key, credential headers), once entered: redacted from everything"""

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


def client_timeout(lib, config: JudgeConfig):
    """The request timeout for the official client, with opening the connection capped at 10 s (an unreachable
    host fails in seconds, not after the full request timeout)."""
    timeout_cls = getattr(lib, "Timeout", None)
    if timeout_cls is None:
        return config.timeout
    return timeout_cls(config.timeout, connect=min(config.timeout, 10.0))


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


def extra_headers(config: JudgeConfig) -> dict[str, str]:
    """The headers of `headers_env` (header name → environment variable holding its value), read now."""
    out = {}
    for header, var in config.headers_env.items():
        value = os.environ.get(var)
        if not value:
            raise FarmError(f"environment variable {var} (header {header}) is empty or not set",
                            field=f"headers_env.{header}", hint=f"export {var}=... before running")
        out[header] = value
    return out


def sent_headers(config: JudgeConfig) -> dict[str, object]:
    """Headers sent with every request besides the client's own: headers_env and decoding.extra_headers."""
    extra = config.decoding.get("extra_headers")
    return {**extra_headers(config), **(extra if isinstance(extra, dict) else {})}


def client_credentials(client: object, config: JudgeConfig) -> list[str]:
    """Every credential a freshly made official client sends (its key, auth and default headers, the value of
    api_key_env, headers_env and credential-like decoding.extra_headers): what to redact, whatever its length."""
    from farm.annotators.secrets import client_secrets, header_secrets, unique

    named = os.environ.get(config.api_key_env) if config.api_key_env else None
    return unique([*client_secrets(client, [named]), *header_secrets(sent_headers(config))])


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


def classify_error(e: Exception, lib, key_hint: str, secrets: Sequence[str] = (), url: str | None = None,
                   answered: bool = True) -> Exception:
    """Map an official client's exception (openai and anthropic share the names) to ours.

    Returns the exception to raise: TransientError, RejectedError or FarmError; anything unknown is returned
    unchanged (a bug worth seeing). Every text is redacted of `secrets` (what the client sends as credentials)
    and of credential-like environment values. A connection that cannot even be opened (refused, unknown host,
    connect timeout) before any request of this run was answered is a FarmError naming the URL: retrying a
    server that is not there only delays the error; after an answer it is transient (a restarting server).
    """
    import json

    from farm.annotators.retry import TRANSIENT_STATUS, RejectedError, TransientError, parse_retry_after

    secrets = [*secrets, *env_secrets()]
    if isinstance(e, lib.APIStatusError):
        status = e.status_code
        # servers quote the rejected key back ("Incorrect API key provided: sk-..."): never keep it
        text = redact(f"HTTP {status}: {str(getattr(e, 'message', e))[:300]}", secrets)
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
        why = connect_failure(e)
        if why is not None and not answered:
            return FarmError(f"cannot reach {safe_url(url, secrets)}: {why}", field="base_url",
                             hint="is the server running, and is base_url (or OPENAI_BASE_URL / ANTHROPIC_BASE_URL) "
                                  "right?")
        return TransientError(redact(f"{type(e).__name__}: {e}" + (f" ({why})" if why else ""), secrets))
    if isinstance(e, (json.JSONDecodeError, lib.APIResponseValidationError)):
        return TransientError(redact(f"malformed response: {str(e)[:200]}", secrets))
    return e


def connect_failure(e: BaseException) -> str | None:
    """'connection refused', 'host not found: ...' or 'connect timeout' when `e` (or what caused it) says the
    connection could not be opened at all; None for failures after it was open (resets, read timeouts).

    >>> connect_failure(RuntimeError("x")) is None, connect_failure(ConnectionRefusedError(111, "refused"))
    (True, 'connection refused')
    """
    import socket

    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, ConnectionRefusedError):
            return "connection refused"
        if isinstance(x, socket.gaierror):
            return f"host not found ({x.strerror or x})"
        name = type(x).__name__
        if name in ("ConnectTimeout", "ServerTimeoutError") or "ConnectionTimeout" in name:
            return "connect timeout"
        if name == "ClientConnectorDNSError":
            return f"host not found ({x})"
        x = x.__cause__ or x.__context__
    return None


def safe_url(url: object, secrets: Sequence[str] = ()) -> str:
    """A URL for messages: without user:password and redacted.

    >>> safe_url("http://u:pw@host:8/v1?api-key=K", ["K"])
    'http://host:8/v1?api-key=[redacted]'
    """
    from urllib.parse import urlsplit, urlunsplit

    text = str(url or "the default endpoint")
    try:
        parts = urlsplit(text)
        if parts.username or parts.password:
            parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
        text = urlunsplit(parts)
    except ValueError:
        pass
    return redact(text, [*secrets, *env_secrets()])
