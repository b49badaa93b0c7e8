"""Replay: recorded verdicts from files as a judge (reproducibility after a judge is retired, and free baselines).

A judge folder with `backend: replay` lists files of recorded verdicts, e.g. PandaLM's
`gpt-3.5-turbo-testset-v1.json` (joined on `idx`, verdict in `gpt_result`: '1', '2', 'Tie', or 'garbage' for an
unparseable answer) or AlpacaEval `annotations.json` files (joined on content, verdict in `preference`).

- `key: content`: a pair matches a record with the same instruction, input and outputs (Pair.key()); a record
  of the swapped pair matches too, with p → 1 - p.
- `key: id`: a pair matches the record whose `id_field` equals `pair.id`; a pair shown swapped (meta "swapped")
  gets 1 - p.
A pair with no record, or whose record holds an unreadable verdict, is invalid (None) with the recorded text as
raw: never a guess. Replay makes no requests and costs nothing.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from farm.annotators.config import JudgeConfig
from farm.errors import FarmError
from farm.io import read_records
from farm.types import Annotation, Pair, check_preference, from_alpaca_eval, from_pandalm

_FIELDS = ("p_output_2", "preference", "gpt_result", "pandalm_result")
_FORMATS = {"p_output_2": "p", "preference": "alpaca_eval", "gpt_result": "pandalm", "pandalm_result": "pandalm"}
_REASONS = ("raw_completion", "gpt_reason", "pandalm_reason", "reason")


def convert(value: Any, fmt: str) -> float | None:
    """A recorded verdict → P(output_2 better), or None when it is not a verdict.

    >>> [convert(v, "pandalm") for v in ("1", "2", "Tie", "garbage", 0, 2)]
    [0.0, 1.0, 0.5, None, 0.5, 1.0]
    >>> [convert(v, "alpaca_eval") for v in (1, 2, 1.5, "x")], convert(0.25, "p"), convert(3, "p")
    ([0.0, 1.0, 0.5, None], 0.25, None)
    """
    try:
        if fmt == "pandalm":
            return from_pandalm(0 if str(value).strip().lower() == "tie" else value)
        if fmt == "alpaca_eval":
            return from_alpaca_eval(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return check_preference(value)
    except ValueError:
        return None


def resolve_files(patterns: Sequence[str], folder: Path) -> list[Path]:
    """Globs relative to the judge folder, absolute, or `shared:<path>` inside ../shared/data."""
    from farm.data import shared_data_dir

    out: list[Path] = []
    for pattern in patterns:
        if pattern.startswith("shared:"):
            root = shared_data_dir()
            if root is None:
                raise FarmError("../shared/data is absent", field="files",
                                hint="set FARM_SHARED_DATA to the folder holding pandalm/ and alpaca_eval/")
            full = root / pattern[len("shared:"):]
        else:
            full = Path(pattern) if Path(pattern).is_absolute() else folder / pattern
        matches = sorted(Path(p) for p in glob.glob(str(full)))
        if not matches:
            raise FarmError("no recorded verdict file matches", file=full, field="files")
        out.extend(matches)
    return out


class ReplayJudge:
    def __init__(self, name: str, config: JudgeConfig, folder: Path):
        if not config.files:
            raise FarmError("a replay judge needs files", file=folder / "config.yaml", field="files")
        self.name, self.config = name, config
        self.paths = resolve_files(config.files, folder)
        self.table: dict[str, tuple[Any, str, str]] = {}  # key → (verdict value, raw text, format)
        for path in self.paths:
            self._index(path)
        blob = json.dumps([[str(p) for p in self.paths], config.key, config.id_field, config.preference_field,
                           config.preference_format])
        self._identity = "replay:" + hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _index(self, path: Path) -> None:
        c = self.config
        records = read_records(path)
        if not records:
            return
        field = c.preference_field or next((f for f in _FIELDS if f in records[0]), "")
        if not field:
            raise FarmError(f"cannot tell which field holds the verdict (looked for {', '.join(_FIELDS)})",
                            file=path, field="preference_field")
        fmt = c.preference_format if c.preference_format != "auto" else _FORMATS.get(field, "p")
        for line, rec in enumerate(records, 1):
            if field not in rec:
                raise FarmError("missing verdict field", file=path, line=line, field=field)
            if c.key == "id":
                if c.id_field not in rec:
                    raise FarmError("missing id field", file=path, line=line, field=c.id_field)
                key = f"id:{rec[c.id_field]}"
            else:
                try:
                    key = Pair(instruction=str(rec["instruction"]), input=str(rec.get("input") or ""),
                               output_1=str(rec.get("output_1", rec.get("response1"))),
                               output_2=str(rec.get("output_2", rec.get("response2")))).key()
                except KeyError:
                    raise FarmError("content keys need instruction, output_1 and output_2", file=path,
                                    line=line, field="instruction") from None
            reason = next((str(rec[r]) for r in _REASONS if rec.get(r)), "")
            raw = f"{rec[field]}" + (f": {reason}" if reason and reason != str(rec[field]) else "")
            self.table.setdefault(key, (rec[field], raw, fmt))  # the first record of a key wins

    def identity(self) -> str:
        return self._identity

    def lookup(self, pair: Pair) -> tuple[float | None, str, bool]:
        """(preference for the pair as given, raw, found)."""
        if self.config.key == "id":  # the record is in the original order; the pair may be shown swapped
            hit, flip = self.table.get(f"id:{pair.id}"), bool(pair.meta.get("swapped"))
        else:  # the content says the order
            hit, flip = self.table.get(pair.key()), False
            if hit is None:
                hit, flip = self.table.get(pair.swapped().key()), True
        if hit is None:
            return None, "", False
        value, raw, fmt = hit
        p = convert(value, fmt)
        return (1.0 - p if flip and p is not None else p), raw, True

    def annotate(self, pairs: Sequence[Pair], seed: int = 0) -> list[Annotation]:
        out = []
        for pair in pairs:
            p, raw, found = self.lookup(pair)
            meta = {"replay": "recorded" if found else "no recorded verdict for this pair"}
            out.append(Annotation(pair=pair, preference=p, annotator=self.name, raw=raw, meta=meta))
        return out
