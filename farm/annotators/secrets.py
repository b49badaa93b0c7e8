"""Keeping credentials out of everything farm writes: annotation files, the SQLite cache, the spend ledger,
stderr and exception texts.

What is a secret is decided by what the client *sends*, not by variable names: the value of the judge's
`api_key_env` variable, the key the official client resolved for itself (OPENAI_API_KEY, ANTHROPIC_API_KEY...),
and the value of every credential header it sends (Authorization, x-api-key, api-key, cookies, and any header
whose name says key/token/auth/secret). Those are redacted whatever their length. Environment variables whose
*names* look like credentials (KEY, TOKEN, SECRET, PASSWORD) are redacted as well when they are 8 characters or
longer (shorter values of unrelated variables, "1" or "true", would otherwise eat ordinary text).

Text from the server (an answer, an error body) is redacted before it is parsed into a file or an exception; the
pair's own text (the user's input) is never altered.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

MARK = "[redacted]"
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie",
                                "x-auth-token", "x-goog-api-key", "ocp-apim-subscription-key"})
_NAME_MARKS = ("key", "token", "auth", "secret", "password", "cookie", "credential", "session", "signature")
_ENV_MARKS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CRED", "AUTH")
_SCHEMES = ("bearer ", "basic ", "token ", "apikey ", "api-key ")
_NOT_SECRET = frozenset({"", "EMPTY", "none", "None"})  # what we send to servers that need no key


def is_credential_header(name: str) -> bool:
    """
    >>> [is_credential_header(n) for n in ("Authorization", "api-key", "X-My-Token", "Content-Type")]
    [True, True, True, False]
    """
    low = name.lower()
    return low in CREDENTIAL_HEADERS or any(m in low for m in _NAME_MARKS)


def header_secrets(headers: Mapping[str, object] | None) -> list[str]:
    """The credential values among `headers`: each value, and for "Bearer X" also X.

    >>> header_secrets({"Authorization": "Bearer k1", "api-key": "k2", "Accept": "application/json"})
    ['Bearer k1', 'k1', 'k2']
    """
    out: list[str] = []
    for name, value in (headers or {}).items():
        if not isinstance(value, str) or not is_credential_header(str(name)):
            continue
        out.append(value)
        low = value.lower()
        for scheme in _SCHEMES:
            if low.startswith(scheme):
                out.append(value[len(scheme):].strip())
    return [v for v in out if v not in _NOT_SECRET]


def client_secrets(client: object, extra: Iterable[str | None] = ()) -> list[str]:
    """Everything an official SDK client sends as a credential (its key, auth headers, default headers), plus
    `extra` (e.g. the value of the config's api_key_env)."""
    values: list[str] = [v for v in extra if v]
    for attr in ("api_key", "auth_token"):
        value = getattr(client, attr, None)
        if isinstance(value, str):
            values.append(value)
    for attr in ("auth_headers", "default_headers"):
        try:
            headers = getattr(client, attr, None)
        except Exception:  # noqa: BLE001 (a property of a client we do not control)
            headers = None
        if isinstance(headers, Mapping):
            values += header_secrets(headers)
    return unique(values)


def env_secrets() -> list[str]:
    """Values of environment variables whose names look like credentials (8 characters or longer)."""
    return [v for k, v in os.environ.items() if any(m in k.upper() for m in _ENV_MARKS) and len(v) >= 8]


def unique(values: Iterable[str]) -> list[str]:
    """Distinct non-trivial secrets, longest first (so "Bearer k" goes before "k")."""
    return sorted({v for v in values if v and v not in _NOT_SECRET}, key=lambda v: (-len(v), v))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by '[redacted]'; whatever a replacement could spell again (a one-letter
    key inside the mark, a key across the mark's edge) is removed, so no secret survives.

    >>> redact("Incorrect API key provided: sk-abcdefgh123", ["sk-abcdefgh123"])
    'Incorrect API key provided: [redacted]'
    >>> redact("Bearer e sent", ["e"])  # a one-letter key: the mark would spell it, so it goes too
    'B[rdactd]ar[rdactd]r [rdactd] s[rdactd]nt'
    """
    secrets = [s for s in secrets if s]
    if not text or not secrets:
        return text
    mark = MARK
    for s in secrets:
        if s in mark:
            mark = mark.replace(s, "")
    for s in secrets:
        if s in text:
            text = text.replace(s, mark)
    changed = True
    while changed:  # a replacement can join characters into a secret again: delete until none is left
        changed = False
        for s in secrets:
            if s in text:
                text, changed = text.replace(s, ""), True
    return text


def redact_obj(obj: object, secrets: list[str]) -> object:
    """`redact` on every string inside dicts and lists (a backend's meta)."""
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {redact(str(k), secrets) if isinstance(k, str) else k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, secrets) for v in obj]
    return obj
