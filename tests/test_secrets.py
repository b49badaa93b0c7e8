"""Secrets: an API key planted in the environment is used on the wire but appears in no artefact, log, error
message or repr — also when the server echoes it back in an error ("Incorrect API key provided: sk-...") or in
an answer. Everything a run leaves behind is grepped: output files, the SQLite cache and its WAL/SHM files,
stdout/stderr of the CLI, exception texts, and the reprs/vars of the judge objects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer

from farm.annotators import AnnotationRun, annotate_pairs, load_annotator
from farm.errors import FarmError
from farm.io import write_annotations, write_pairs
from farm.types import Pair

KEY = "sk-test-PLANTED-123-abcdefghijklmnop"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}


def pairs(n: int = 6) -> list[Pair]:
    return [Pair(f"secret-test {i}", "a" * (i + 2), "b" * (7 - i)) for i in range(n)]


def grep_tree(root: Path) -> list[str]:
    """Files under root holding the key (raw bytes, so also inside SQLite pages and gzip is not used here)."""
    return [str(p) for p in root.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def object_texts(obj, depth: int = 0, seen: set | None = None) -> list[str]:
    """repr and str of an object and, recursively, of its attributes (judge → config, template, members...)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 4:
        return []
    seen.add(id(obj))
    out = [repr(obj), str(obj)]
    for value in (vars(obj).values() if hasattr(obj, "__dict__") else []):
        out += object_texts(value, depth + 1, seen)
    for value in (obj if isinstance(obj, (list, tuple)) else []):
        out += object_texts(value, depth + 1, seen)
    return out


@pytest.fixture
def server(monkeypatch):
    with FakeLLMServer() as s:
        for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            monkeypatch.setenv(var, KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", s.openai_base_url)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", s.anthropic_base_url)
        yield s


@pytest.mark.parametrize("name", ["gpt4o_mini_basic", "claude_haiku_cot", "pool_api_mix"])
def test_key_is_used_but_never_written_or_shown(server, tmp_path, name):
    server.faults.extend(["429", ("garbage", f"my key is {KEY}"), "500"])  # one answer even quotes the key
    judge = load_annotator(name, **FAST)
    run = AnnotationRun()
    anns = annotate_pairs(pairs(), judge, cache_path=tmp_path / "cache.sqlite", run=run, progress=False)
    write_annotations(tmp_path / "out.jsonl", anns)
    (tmp_path / "summary.txt").write_text(run.summary() + "\n" + "\n".join(map(repr, anns)))
    sent = {r.headers.get("authorization", "").removeprefix("Bearer ") or r.headers.get("x-api-key")
            for r in server.requests}
    assert sent == {KEY}  # it really was the key the client sent
    assert grep_tree(tmp_path) == []
    assert not [t for t in object_texts(judge) if KEY in t]


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_a_server_that_echoes_the_key_in_a_401_does_not_leak_it(server, backend):
    server.fault_rule = lambda i, body: "echo_key"
    name = "gpt4o_mini_basic" if backend == "openai" else "claude_haiku_basic"
    with pytest.raises(FarmError) as e:
        annotate_pairs(pairs(2), load_annotator(name, **FAST), progress=False)
    text = str(e.value) + repr(e.value) + "".join(map(str, e.value.args))
    assert "authentication failed" in text and KEY not in text
    assert "[redacted]" in text  # the server's message is kept, the key inside it is not


def test_rejected_and_exhausted_requests_do_not_leak_the_key(server, tmp_path):
    # a 400 and retries that run out both keep the error text as the pair's raw answer: redacted
    server.fault_rule = lambda i, body: (None if "secret-test 3" in str(body) else
                                         ("echo_key", 400) if i % 2 == 0 else ("echo_key", 503))
    anns = annotate_pairs(pairs(4), load_annotator("gpt4o_mini_basic", max_retries=1, **FAST),
                          cache_path=tmp_path / "c.sqlite", progress=False)
    write_annotations(tmp_path / "out.json", anns)
    assert all(a.preference is None and "Incorrect API key" in a.raw for a in anns[:3])
    assert grep_tree(tmp_path) == [] and not [a for a in anns if KEY in repr(a)]


def test_cli_run_with_faults_and_a_rejected_key_leaves_no_trace(server, tmp_path):
    write_pairs(tmp_path / "pairs.jsonl", pairs())
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.openai_base_url}

    def farm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "farm", "annotate", "--pairs", str(tmp_path / "pairs.jsonl"),
                               "--annotator", "gpt4o_mini_basic", "--no-progress", *args, "backoff_base=0.01"],
                              env=env, capture_output=True, text=True, timeout=120)

    server.faults.extend(["429", "reset", ("garbage", f"echo {KEY}")])
    ok = farm("--out", str(tmp_path / "run" / "out.jsonl"))
    server.fault_rule = lambda i, body: "echo_key"  # the server now rejects the key, quoting it
    bad = farm("--out", str(tmp_path / "run2" / "out.jsonl"), "--no-cache")
    assert ok.returncode == 0 and bad.returncode == 2
    assert "authentication failed" in bad.stderr
    for stream in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert KEY not in stream
    assert grep_tree(tmp_path) == []
    assert (tmp_path / "run" / "annotation_cache.sqlite").exists()  # the cache was written, and grepped


def test_judge_configs_hold_no_key_field():
    """Keys come only from the environment (or the clients' own config): a judge config has no field for one."""
    from dataclasses import fields

    from farm.annotators.config import JudgeConfig

    names = {f.name for f in fields(JudgeConfig)}
    assert "api_key_env" in names and not [n for n in names if n in ("api_key", "token", "secret", "password")]
    with pytest.raises(FarmError, match="api_key"):
        load_annotator("gpt4o_mini_basic", api_key=KEY)


# ----- any variable name, any key length, a server that echoes every header back -----

ECHO_VARS = ["JUDGE_CRED", "X", "MY_KEY", "cred2", "AZURE_OPENAI_THING"]
LENGTHS = [1, 3, 7, 8, 64]
ALPHABET = "~^|`"  # characters nothing else farm writes contains, so even a 1-character key can be grepped for


def odd_key(n: int, salt: int) -> str:
    return "".join(ALPHABET[(i * 7 + salt) % len(ALPHABET)] for i in range(n))


def leaks(root: Path, key: str) -> list[str]:
    """Every place under root where `key` survives: text files by content; SQLite databases by their SQL dump
    (their raw pages hold arbitrary bytes, so a short key is looked for in what they store, not in page bytes);
    long keys also in the raw bytes of every file (WAL and SHM included)."""
    import sqlite3

    found = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if data.startswith(b"SQLite format 3"):
            with sqlite3.connect(p) as db:
                if key in "\n".join(db.iterdump()):
                    found.append(f"{p} (rows)")
        elif p.suffix not in (".sqlite-wal", ".sqlite-shm") and key.encode() in data:
            found.append(str(p))
        if len(key) >= 8 and key.encode() in data:
            found.append(f"{p} (bytes)")
    return found


def echo_rule(i: int, body: dict):
    """200 / 400 / 500 echoes of every header, by pair, with one clean answer so the run is not all-failed."""
    text = str(body)
    for tag, fault in (("echo-0 ", ("echo_headers", 200)), ("echo-1 ", ("echo_headers", 400)),
                       ("echo-2 ", ("echo_headers", 500)), ("echo-3 ", ("echo_headers", 200))):
        if tag in text:
            return fault
    return None


def echo_pairs() -> list[Pair]:
    return [Pair(f"echo-{i} rewrite", "a" * (i + 2), "b" * (7 - i)) for i in range(5)]


@pytest.mark.parametrize("var", ECHO_VARS)
@pytest.mark.parametrize("n", LENGTHS)
def test_echoed_credentials_never_reach_files_or_errors(tmp_path, monkeypatch, capfd, var, n):
    key = odd_key(n, len(var))
    for v in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, key)
    with FakeLLMServer() as server:
        server.fault_rule = echo_rule
        backend, url = (("gpt4o_mini_basic", server.openai_base_url) if n % 2 else
                        ("claude_haiku_basic", server.anthropic_base_url))
        judge = load_annotator(backend, api_key_env=var, base_url=url, max_retries=1, **FAST)
        run = AnnotationRun()
        anns = annotate_pairs(echo_pairs(), judge, cache_path=tmp_path / "cache.sqlite", run=run, progress=False)
        write_annotations(tmp_path / "out.jsonl", anns)
        sent = {r.headers.get("x-api-key") or r.headers.get("authorization", "").removeprefix("Bearer ")
                for r in server.requests}
        assert sent == {key}  # the client really sent this key
        assert any(key in json_text for json_text in (r.answer for r in server.requests))  # and it came back
        server.fault_rule = lambda i, body: ("echo_headers", 401)  # now the key is refused, and quoted
        with pytest.raises(FarmError) as e:
            annotate_pairs(echo_pairs(), judge, cache_path=tmp_path / "cache2.sqlite", progress=False)
    statuses = {str(r.fault) for r in server.requests}
    assert {"('echo_headers', 200)", "('echo_headers', 400)", "('echo_headers', 500)",
            "('echo_headers', 401)"} <= statuses
    assert [a.preference is None for a in anns] == [False, True, True, False, False]
    assert leaks(tmp_path, key) == []
    assert (tmp_path / "cache.spend.jsonl").exists()  # the ledger was written, and searched
    error_text = str(e.value) + repr(e.value) + "".join(map(str, e.value.args))
    assert "authentication failed" in error_text and key not in error_text
    out, err = capfd.readouterr()
    assert key not in out + err
    assert not [a for a in anns if key in repr(a)]


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_headers_env_values_are_sent_and_redacted(tmp_path, monkeypatch, backend):
    """An extra credential header (Azure's api-key, a gateway token) from headers_env: sent, never written."""
    monkeypatch.setenv("GATEWAY", "gw-PLANTED-77")
    monkeypatch.setenv("AZ", "~|~")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with FakeLLMServer() as server:
        server.fault_rule = echo_rule
        name, url = (("gpt4o_mini_basic", server.openai_base_url) if backend == "openai" else
                     ("claude_haiku_basic", server.anthropic_base_url))
        judge = load_annotator(name, base_url=url, headers_env={"api-key": "AZ", "x-gateway-token": "GATEWAY"},
                               max_retries=1, **FAST)
        anns = annotate_pairs(echo_pairs(), judge, cache_path=tmp_path / "c.sqlite", progress=False)
        write_annotations(tmp_path / "out.jsonl", anns)
        assert {(r.headers["api-key"], r.headers["x-gateway-token"]) for r in server.requests} == \
            {("~|~", "gw-PLANTED-77")}
    for secret in ("~|~", "gw-PLANTED-77", KEY):
        assert leaks(tmp_path, secret) == [], secret


def test_cli_with_an_unmarked_variable_and_a_short_key_leaves_no_trace(tmp_path):
    """The CLI end to end, stderr included: JUDGE_CRED (no KEY/TOKEN in its name), a 3-character key, echoes."""
    key = "^~|"
    write_pairs(tmp_path / "pairs.jsonl", echo_pairs())
    with FakeLLMServer() as server:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
        env["JUDGE_CRED"] = key

        def farm(out: str, *extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "farm", "annotate", "--pairs", str(tmp_path / "pairs.jsonl"),
                                   "--annotator", "gpt4o_mini_basic", "--out", str(tmp_path / out), "--no-progress",
                                   "api_key_env=JUDGE_CRED", f"base_url={server.openai_base_url}",
                                   "backoff_base=0.01", "max_retries=1", *extra],
                                  env=env, capture_output=True, text=True, timeout=120)

        server.fault_rule = echo_rule
        ok = farm("run/out.jsonl")
        server.fault_rule = lambda i, body: ("echo_headers", 401)
        bad = farm("run2/out.jsonl")
        assert any(key in r.answer for r in server.requests)
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 2 and "authentication failed" in bad.stderr
    for stream in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert key not in stream
    assert leaks(tmp_path, key) == []
