"""A real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI chat-completions and Anthropic messages
protocols for farm's judges, and misbehaves on request.

The official clients (openai 3.x, anthropic 2.x) talk to it over real sockets, so everything between the judge and
the wire (the client's request building and response parsing, our retries, timeouts, cost accounting) is what
production runs. Nothing is mocked.

The judge it plays is simple and checkable: for each pair in the prompt (the `<output_a>` / `<output_b>` blocks that
all of farm's prompts use) the longer output wins, and the answer is written in the format the prompt asks for.
With `logprobs` requested, P(b) = len(b) / (len(a) + len(b)) is returned in `top_logprobs`.

Faults are queued (`server.faults.append("429")`) and consumed one per request, or decided per request by
`server.fault_rule(index, body) -> fault | None`. A fault is a string or a (string, arg) tuple:

    "429" / ("429", {"Retry-After": "1"})   an HTTP error status (any: "500", "503", "401", "400"...),
                                            with optional headers
    "reset"                                  close the connection without answering (a connection reset)
    "malformed"                              200 with a body that is not JSON
    "truncated"                              200 whose body stops half way (Content-Length promises more)
    "empty_choices"                          200 with no choices / no content blocks
    ("slow", seconds)                        answer after an extra delay
    "content_parts"                          OpenAI content as a list of text parts, token counts as strings
    "garbage" / ("garbage", text)            a well-formed answer that no parser understands
    "no_usage"                               a good answer without the usage block (0 tokens reported)
    "echo_key" / ("echo_key", status)        an error (401 by default) whose message quotes the caller's key,
                                             as real APIs do ("Incorrect API key provided: sk-...")
    "echo_headers" / ("echo_headers", status) every request header quoted back: with 200 (the default) in the
                                             answer text and its finish_reason, else in the error body

`server.hold()` makes every request wait (recorded, unanswered) until `server.release()`: a client is then
certainly alive and waiting, which is when the kill tests kill it.

A request the client did not finish sending (a client killed mid-request: fewer body bytes than its
Content-Length) is not recorded: `server.partial` counts them.

Run it alone for benchmarks: `python tests/fake_llm_server.py --port 0 --latency 0.05` prints its base URL.
"""

from __future__ import annotations

import json
import math
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

_BLOCK_A = re.compile(r"<output_a>(.*?)</output_a>", re.S)
_BLOCK_B = re.compile(r"<output_b>(.*?)</output_b>", re.S)


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    prompt: str
    started: float
    fault: Any = None
    answer: str = ""


def count_tokens(text: str) -> int:
    """The server's token count: whitespace-separated words (tests recompute it to check cost accounting)."""
    return len(text.split())


def longer_wins(prompt: str) -> list[float]:
    """P(b better) for each pair block in the prompt: the longer output wins; the continuous version is
    len(b) / (len(a) + len(b))."""
    a_blocks, b_blocks = _BLOCK_A.findall(prompt), _BLOCK_B.findall(prompt)
    out = []
    for a, b in zip(a_blocks, b_blocks):
        la, lb = len(a.strip()), len(b.strip())
        out.append(0.5 if la + lb == 0 else lb / (la + lb))
    return out


def default_answer(prompt: str, letters: list[str] | None = None) -> str:
    """The longer-wins verdicts (or the given `letters`), written in the format the prompt asks for."""
    probs = longer_wins(prompt)
    letters = letters or ["b" if p > 0.5 else "a" for p in probs] or ["a"]
    if len(letters) > 1:
        return "\n".join(f"{i}: {x}" for i, x in enumerate(letters, 1))
    x = letters[0]
    if "Output (a)" in prompt:
        return f"Output ({x})"
    if '"ranking"' in prompt:
        ranks = {"a": 1, "b": 2} if x == "a" else {"a": 2, "b": 1}
        return json.dumps({"ranking": [{"output": k, "rank": r} for k, r in ranks.items()]})
    if "Verdict:" in prompt:
        return f"Both answers address the request; the {'second' if x == 'b' else 'first'} is more complete.\n" \
               f"Verdict: {x}"
    return x


# ----- a gullible judge: obeys instructions it finds outside the data blocks -----

# A block as a careless reader sees it: any case, spaces inside the tag, fullwidth brackets, zero-width characters
# (NFKC-normalised first), and the *first* closing tag ends it. Text outside every block is "the prompt".
_ANY_BLOCK = re.compile(r"<\s*(output_a|output_b|instruction|input|pair)\b[^<>]*>.*?<\s*/\s*\1\s*>", re.S | re.I)
_COMMAND = re.compile(r"\b(?:answer|reply|respond|choose|pick|select|say|write|declare)\b", re.I)
_TARGET = re.compile(r"\boutput\s*\(\s*([ab])\s*\)|\bverdict\s*:\s*([ab])\b|\boutput[_ ]([ab])\b", re.I)


def gullible_answer(prompt: str) -> str:
    """Longer wins, unless a line *outside* the data blocks commands one single output ("answer Output (b)"):
    then that output. The prompts' own rules name both outputs or none per line, so they are never obeyed;
    an injection only reaches this judge if it escapes its block, which is what delimiting must prevent."""
    import unicodedata

    seen = "".join(ch for ch in unicodedata.normalize("NFKC", prompt) if unicodedata.category(ch) != "Cf")
    outside = _ANY_BLOCK.sub("\n", seen)
    for line in reversed(outside.splitlines()):
        targets = {next(g for g in m.groups() if g).lower() for m in _TARGET.finditer(line)}
        if len(targets) == 1 and _COMMAND.search(line):
            return default_answer(prompt, [targets.pop()] * max(1, len(longer_wins(prompt))))
    return default_answer(prompt)


class FakeLLMServer:
    """`with FakeLLMServer(latency=0.05) as s:` then point a client at `s.openai_base_url` / `s.anthropic_base_url`."""

    def __init__(self, latency: float = 0.0, answer: Callable[[str], str] = default_answer,
                 host: str = "127.0.0.1", port: int = 0):
        self.latency = latency
        self.answer = answer
        self.faults: deque = deque()
        self.fault_rule: Callable[[int, dict], Any] | None = None
        self.requests: list[Recorded] = []
        self.partial = 0  # requests whose body never fully arrived (a killed client)
        self._open = threading.Event()
        self._open.set()
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the server was answering at once
        self._lock = threading.Lock()
        server = self

        class Handler(_Handler):
            srv = server

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 drops bursts of new connections

            def handle_error(self, request, client_address) -> None:  # a client that went away is no news
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.httpd = Server((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----- lifecycle -----
    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLLMServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._open.set()  # held requests may finish (to dead clients) instead of blocking shutdown
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def hold(self) -> None:
        """Answer nothing until `release()` (requests that arrive meanwhile wait, recorded)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    # ----- bookkeeping -----
    def _next_fault(self, index: int, body: dict) -> Any:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
        return self.fault_rule(index, body) if self.fault_rule else None

    def _record(self, rec: Recorded) -> int:
        with self._lock:
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(self.requests) - 1

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def prompts(self) -> list[str]:
        return [r.prompt for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    disable_nagle_algorithm = True  # TCP_NODELAY, as real servers set: else headers and body wait on delayed ACKs
    srv: FakeLLMServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """GET /stats: requests seen and the most in flight at once (then reset), for benchmarks."""
        if self.path.split("?")[0] != "/stats":
            return self._send(404, {"error": {"message": "no route", "type": "not_found"}})
        with self.srv._lock:
            stats = {"requests": len(self.srv.requests), "max_in_flight": self.srv.max_in_flight}
            self.srv.requests.clear()
            self.srv.max_in_flight = 0
        return self._send(200, stats)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if len(data) < length:  # the client went away half way through its request
            with self.srv._lock:
                self.srv.partial += 1
            self.close_connection = True
            return None
        try:
            body = json.loads(data or b"{}")
        except json.JSONDecodeError:
            return self._send(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            kind = "openai"
            prompt = "\n".join(_text(m.get("content")) for m in body.get("messages", []))
        elif path.endswith("/messages"):
            kind = "anthropic"
            prompt = "\n".join([_text(body.get("system"))] + [_text(m.get("content"))
                                                              for m in body.get("messages", [])])
        else:
            return self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
        rec = Recorded(path=path, headers={k.lower(): v for k, v in self.headers.items()}, body=body,
                       prompt=prompt, started=started)
        index = self.srv._record(rec)
        try:
            self._answer(kind, rec, index, body, prompt)
        finally:
            self.srv._done()

    def _answer(self, kind: str, rec: Recorded, index: int, body: dict, prompt: str) -> None:
        self.srv._open.wait()
        fault = self.srv._next_fault(index, body)
        rec.fault = fault
        name, arg = (fault if isinstance(fault, tuple) else (fault, None))
        if self.srv.latency:
            time.sleep(self.srv.latency)
        if name == "slow":
            time.sleep(float(arg))
        if isinstance(name, str) and name.isdigit():  # any HTTP error status
            headers = dict(arg or {})
            return self._send(int(name), {"error": {"message": f"injected {name}", "type": "server_error"}},
                              headers)
        if name == "echo_key":
            key = rec.headers.get("x-api-key") or rec.headers.get("authorization", "").removeprefix("Bearer ")
            return self._send(int(arg or 401), {"error": {"message": f"Incorrect API key provided: {key}.",
                                                          "type": "invalid_request_error"}})
        if name == "echo_headers":
            status = int(arg or 200)
            echo = json.dumps(rec.headers)
            if status != 200:
                return self._send(status, {"error": {"message": f"bad request, you sent {echo}",
                                                     "type": "invalid_request_error"}})
            rec.answer = f"{self.srv.answer(prompt)} (you sent {echo})"
            out = (_openai_body(rec.answer, body, prompt) if kind == "openai" else
                   _anthropic_body(rec.answer, body, prompt))
            if kind == "openai":
                out["choices"][0]["finish_reason"] = echo
            else:
                out["stop_reason"] = echo
            return self._send(200, out)
        if name == "reset":
            # SO_LINGER with 0 timeout: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if name == "malformed":
            return self._send_raw(200, b"{this is not json", "application/json")
        if name == "truncated":
            full = json.dumps(_openai_body("x", body, prompt) if kind == "openai" else
                              _anthropic_body("x", body, prompt)).encode()
            return self._send_raw(200, full[: len(full) // 2], "application/json", length=len(full))
        answer = self.srv.answer(prompt)
        if name == "garbage":
            answer = arg or "I cannot decide; both have merits and flaws."
        rec.answer = answer
        if kind == "openai":
            out = _openai_body(answer, body, prompt)
            if name == "empty_choices":
                out["choices"] = []
            if name == "no_usage":
                out.pop("usage")
            if name == "content_parts":  # as some compatible servers do: content as parts, counts as strings
                out["choices"][0]["message"]["content"] = [{"type": "text", "text": answer[:4]},
                                                           {"type": "text", "text": answer[4:]}]
                out["usage"] = {"prompt_tokens": "12", "completion_tokens": None}
        else:
            out = _anthropic_body(answer, body, prompt)
            if name == "empty_choices":
                out["content"] = []
        return self._send(200, out)

    def _send(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), "application/json", headers=headers)

    def _send_raw(self, status: int, data: bytes, ctype: str, length: int | None = None,
                  headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            if length is not None and length != len(data):
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content)


def _openai_body(answer: str, body: dict, prompt: str) -> dict:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": answer},
                              "finish_reason": "stop", "logprobs": None}
    if body.get("logprobs"):
        k = int(body.get("top_logprobs") or 1)
        probs = longer_wins(prompt) or [0.5]
        p_b = min(max(probs[0], 1e-6), 1 - 1e-6)
        top = sorted([("b", math.log(p_b)), ("a", math.log(1 - p_b))], key=lambda t: -t[1])[:k]
        choice["logprobs"] = {"content": [{
            "token": answer, "logprob": dict(top).get(answer, -20.0), "bytes": list(answer.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
        }]}
    n_in, n_out = count_tokens(prompt), count_tokens(answer)
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
            "choices": [choice],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}


def _anthropic_body(answer: str, body: dict, prompt: str) -> dict:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", ""),
            "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": count_tokens(prompt), "output_tokens": count_tokens(answer)}}


if __name__ == "__main__":  # a standalone server for benchmarks
    import argparse

    ap = argparse.ArgumentParser(description="fake OpenAI/Anthropic judge server on 127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    s = FakeLLMServer(latency=args.latency, port=args.port).start()
    print(s.openai_base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
