"""A persistent verdict cache: SQLite in WAL mode, one row per (judge identity, pair as shown to the judge).

- Judge identity is a hash of everything that can change a verdict: the config's decoding-relevant keys, the
  prompt and system text, the model (not the price, the endpoint, the key or the concurrency).
- The pair key is `Pair.key()` of the pair *as shown*: when the outputs were swapped before judging, the swapped
  pair's key, so the swap flag is part of the key (and stored in its own column for inspection).
- Every verdict is committed the moment it lands (autocommit, one row per transaction), so a killed run loses
  at most the requests in flight; a re-run reads the rows and requests only what is missing.
- WAL lets several processes read while one writes; writers wait up to `busy_timeout` for the lock.
  `INSERT OR REPLACE` keeps one row per key whoever writes last.
- What is stored: the verdict, the judge's raw answer, tokens, price and time. Never request headers, config
  secrets or keys (raw text is scrubbed of credential-like environment values before it gets here).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from farm.errors import FarmError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    judge TEXT NOT NULL,
    pair_key TEXT NOT NULL,
    swapped INTEGER NOT NULL DEFAULT 0,
    preference REAL,
    raw TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    price REAL NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    meta TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    PRIMARY KEY (judge, pair_key)
)
"""


@dataclass
class Verdict:
    """One judged pair, as cached. `preference` None = the judge's answer could not be parsed."""

    preference: float | None
    raw: str
    input_tokens: int = 0
    output_tokens: int = 0
    price: float = 0.0
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)


class VerdictCache:
    """`with VerdictCache(path) as cache:`; safe to share between threads (one connection behind a lock) and
    between processes (SQLite's WAL locking)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: autocommit, each INSERT is its own committed transaction
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (not a power cut) and keeps commits cheap
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.execute("SELECT judge, pair_key, swapped, preference, raw, meta FROM verdicts LIMIT 0")
        except sqlite3.DatabaseError as e:
            raise FarmError(f"cannot use this file as the verdict cache: {e}", file=self.path,
                            hint="give another --cache path (or delete this file if it is a broken cache)") from None

    def get_many(self, judge: str, keys: list[str]) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                chunk = unique[i: i + 500]
                rows = self._db.execute(
                    "SELECT pair_key, preference, raw, input_tokens, output_tokens, price, seconds, meta "
                    f"FROM verdicts WHERE judge = ? AND pair_key IN ({','.join('?' * len(chunk))})",
                    [judge, *chunk],
                ).fetchall()
                for key, pref, raw, n_in, n_out, price, seconds, meta in rows:
                    out[key] = Verdict(pref, raw, n_in, n_out, price, seconds, json.loads(meta))
        return out

    def put(self, judge: str, pair_key: str, verdict: Verdict, swapped: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (judge, pair_key, int(swapped), verdict.preference, verdict.raw, verdict.input_tokens,
                 verdict.output_tokens, verdict.price, verdict.seconds, json.dumps(verdict.meta, default=str),
                 time.time()),
            )

    def count(self, judge: str | None = None) -> int:
        with self._lock:
            if judge is None:
                return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM verdicts WHERE judge = ?", (judge,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
