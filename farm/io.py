"""Reading and writing records: JSON / JSONL (optionally .gz), AlpacaEval and PandaLM files.

Every error a user's file can cause is a `FarmError` naming the file, the line (JSONL line or list index + 1
for JSON arrays) and the field. Writes are atomic: a temporary file in the same folder, fsync, then rename,
so a killed process never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from farm.errors import FarmError
from farm.types import Annotation, Pair, check_preference, from_alpaca_eval, from_pandalm

PathLike = str | os.PathLike


# ----- atomic writes -----

def current_umask() -> int:
    """The process's umask, read without changing it where the system says (Linux /proc), else by setting and
    restoring it once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[io.IOBase]:
    """Open a temp file beside `path`; on success fsync and rename over it; on error remove it.

    A `.gz` suffix compresses. Parent folders are created. The file gets the mode a plain `open` would give it
    (0666 less the umask: 0644 by default), or keeps the mode of the file it replaces; `mkstemp`'s 0600 is
    only for the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        file_mode = path.stat().st_mode & 0o7777
    except OSError:
        file_mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, file_mode)
        with os.fdopen(fd, "wb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) if path.suffix == ".gz" else raw
            f = stream if binary else io.TextIOWrapper(stream, encoding="utf-8")
            yield f
            if not binary:
                f.flush()
                f.detach()  # leaves `stream` open
            if stream is not raw:
                stream.close()  # ends the gzip member; raw stays open (fileobj was given)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


# ----- generic records -----

def _is_jsonl(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] == ".jsonl"


def read_text(path: PathLike) -> str:
    """The UTF-8 text of a file (.gz decompressed); a byte that is not UTF-8 is a FarmError naming its line and
    column (a UTF-8 BOM is skipped)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged .gz
        raise FarmError(f"cannot read file: {e}", file=path) from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start + bom
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise FarmError(f"not UTF-8: byte 0x{data[start]:02x} at column {column} cannot be decoded", file=path,
                        line=line, hint="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)") from None


def _json_error(path: Path, e: json.JSONDecodeError, line_offset: int = 0) -> FarmError:
    return FarmError(f"malformed JSON: {e.msg} (column {e.colno})", file=path, line=e.lineno + line_offset)


def read_records(path: PathLike) -> list[dict[str, Any]]:
    """Records from a .json (array of objects, or one object of parallel lists/a single record),
    .jsonl, or either with .gz. Each record gets no extra keys; errors name file and line."""
    path = Path(path)
    if not path.exists():
        raise FarmError("file not found", file=path)
    if path.is_dir():
        raise FarmError("expected a file, got a folder", file=path)
    text = read_text(path)
    if _is_jsonl(path):
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FarmError(f"malformed JSON line: {e.msg} (column {e.colno})", file=path, line=i) from None
            except RecursionError:
                raise FarmError("JSON nested too deeply", file=path, line=i) from None
            if not isinstance(rec, dict):
                raise FarmError(f"expected a JSON object, got {type(rec).__name__}", file=path, line=i)
            out.append(rec)
        return out
    try:
        data = json.loads(text)
    except RecursionError:
        raise FarmError("JSON nested too deeply", file=path) from None
    except json.JSONDecodeError as e:
        # maybe it is JSONL with a .json suffix
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].lstrip().startswith("{"):
            try:
                recs = [json.loads(ln) for ln in lines]
            except (json.JSONDecodeError, RecursionError):
                recs = None
            if recs is not None and all(isinstance(r, dict) for r in recs):
                return recs
        raise _json_error(path, e) from None
    if isinstance(data, list):
        for i, rec in enumerate(data, 1):
            if not isinstance(rec, dict):
                raise FarmError(f"record {i} is {type(rec).__name__}, expected an object", file=path, line=i)
        return data
    if isinstance(data, dict):
        values = list(data.values())
        if values and all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
            keys = list(data)
            return [dict(zip(keys, row)) for row in zip(*values)]
        return [data]
    raise FarmError(f"expected a JSON array of objects, got {type(data).__name__}", file=path)


def write_records(path: PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Atomically write records as JSONL (suffix .jsonl[.gz]) or a JSON array (.json[.gz])."""
    path = Path(path)
    records = list(records)
    with atomic_open(path, "w") as f:
        if _is_jsonl(path):
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
        else:
            json.dump(records, f, ensure_ascii=False, indent=1, default=_json_default)
    return path


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def get_field(rec: dict, name: str, path: PathLike, line: int, kind: type | tuple = str,
              default: Any = ..., allow_none: bool = False) -> Any:
    """`rec[name]` checked for presence and type, or a FarmError naming file, line and field."""
    if name not in rec or (rec[name] is None and not allow_none):
        if default is not ...:
            return default
        raise FarmError("missing required field", file=path, line=line, field=name)
    v = rec[name]
    if v is None and allow_none:
        return v
    if kind is str and isinstance(v, (int, float)):
        return str(v)  # real files hold answers like 42 or true where a string was meant
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise FarmError(f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__} {v!r:.60}",
                        file=path, line=line, field=name)
    return v


# ----- pairs -----

def pair_from_record(rec: dict, path: PathLike = "<records>", line: int = 0) -> Pair:
    def s(name: str, default: Any = ...) -> str:
        return get_field(rec, name, path, line, str, default)

    return Pair(
        instruction=s("instruction"), output_1=s("output_1"), output_2=s("output_2"),
        input=s("input", ""), generator_1=s("generator_1", ""), generator_2=s("generator_2", ""),
        id=str(rec.get("id", "") or ""), meta=rec.get("meta") if isinstance(rec.get("meta"), dict) else {},
    )


def read_pairs(path: PathLike) -> list[Pair]:
    """Pairs from JSON/JSONL: instruction, input?, output_1, output_2, generator_1?, generator_2?, id?."""
    return [pair_from_record(r, path, i) for i, r in enumerate(read_records(path), 1)]


def write_pairs(path: PathLike, pairs: Iterable[Pair]) -> Path:
    return write_records(path, (p.to_record() for p in pairs))


# ----- annotations -----

def preference_from_record(rec: dict, path: PathLike, line: int) -> float | None:
    """Our `p_output_2` if present (P(output_2 better)), else AlpacaEval's `preference` code."""
    try:
        if "p_output_2" in rec:
            v = rec["p_output_2"]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"expected a number or null, got {v!r:.60}")
            return check_preference(v)
        if "preference" in rec:
            return from_alpaca_eval(rec["preference"])
    except ValueError as e:
        raise FarmError(str(e), file=path, line=line,
                        field="p_output_2" if "p_output_2" in rec else "preference") from None
    raise FarmError("missing field: need 'p_output_2' (P(output_2 better)) or AlpacaEval 'preference'",
                    file=path, line=line, field="preference")


def annotation_from_record(rec: dict, path: PathLike = "<records>", line: int = 0) -> Annotation:
    pair = pair_from_record(rec, path, line)
    price = rec.get("price_per_example") or 0.0
    spent = rec.get("price_spent") or 0.0
    time = rec.get("time_per_example") or 0.0
    return Annotation(
        pair=pair,
        preference=preference_from_record(rec, path, line),
        annotator=str(rec.get("annotator", "") or ""),
        raw=str(rec.get("raw_completion", "") or ""),
        price=float(price) if isinstance(price, (int, float)) and math.isfinite(price) else 0.0,
        time=float(time) if isinstance(time, (int, float)) and math.isfinite(time) else 0.0,
        meta=rec.get("annotation_meta") or {},
        price_spent=float(spent) if isinstance(spent, (int, float)) and math.isfinite(spent) else 0.0,
    )


def read_annotations(path: PathLike) -> list[Annotation]:
    """Our annotation files or AlpacaEval `annotations.json[.gz]` (output_1 = baseline, output_2 = model)."""
    return [annotation_from_record(r, path, i) for i, r in enumerate(read_records(path), 1)]


def write_annotations(path: PathLike, annotations: Iterable[Annotation]) -> Path:
    return write_records(path, (a.to_record() for a in annotations))


def annotations_to_frame(annotations: Iterable[Annotation]):
    """A pandas DataFrame, one row per annotation, columns as in `Annotation.to_record`."""
    import pandas as pd

    return pd.DataFrame([a.to_record() for a in annotations])


# ----- model outputs (AlpacaEval model_outputs.json) -----

def read_model_outputs(path: PathLike, generator: str | None = None) -> list[dict[str, str]]:
    """AlpacaEval `model_outputs.json`: records with instruction, output, generator (input optional)."""
    out = []
    for i, r in enumerate(read_records(path), 1):
        rec = {
            "instruction": get_field(r, "instruction", path, i),
            "input": get_field(r, "input", path, i, default=""),
            "output": get_field(r, "output", path, i),
            "generator": generator or get_field(r, "generator", path, i, default=Path(path).stem),
        }
        if "dataset" in r:
            rec["dataset"] = str(r["dataset"])
        out.append(rec)
    return out


def write_model_outputs(path: PathLike, outputs: Iterable[dict[str, Any]]) -> Path:
    return write_records(path, outputs)


# ----- PandaLM -----

def read_pandalm_humans(path: PathLike) -> list[dict[str, Any]]:
    """PandaLM test set: each record → instruction, input, output_1, output_2, generator_1/2, idx,
    `human` = list of P(output_2 better) from annotator1..3."""
    out = []
    for i, r in enumerate(read_records(path), 1):
        humans = []
        for k in ("annotator1", "annotator2", "annotator3"):
            if k in r:
                try:
                    humans.append(from_pandalm(r[k]))
                except ValueError as e:
                    raise FarmError(str(e), file=path, line=i, field=k) from None
        if not humans:
            raise FarmError("no human labels (annotator1..3)", file=path, line=i, field="annotator1")
        out.append({
            "idx": get_field(r, "idx", path, i, (int, str)),
            "instruction": get_field(r, "instruction", path, i),
            "input": get_field(r, "input", path, i, default=""),
            "output_1": get_field(r, "response1", path, i),
            "output_2": get_field(r, "response2", path, i),
            # cmp_key is "<model of response1>_<model of response2>" (model names hold no '_')
            "generator_1": str(r.get("cmp_key", "_")).split("_", 1)[0],
            "generator_2": str(r.get("cmp_key", "_")).split("_", 1)[-1],
            "human": humans,
        })
    return out


def map_records(path: PathLike, fn: Callable[[dict, int], Any]) -> list[Any]:
    """Apply fn(record, line) to each record, for adapters that need the line for their errors."""
    return [fn(r, i) for i, r in enumerate(read_records(path), 1)]
