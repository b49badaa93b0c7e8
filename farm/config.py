"""Configs: a dataclass is the schema (a docstring per field), YAML holds overrides, `key=value` wins.

Unknown keys and wrong types are errors that name the key (and the file). Nested dataclasses are addressed
with dots on the command line: `ppo.lr=1e-5`. Values on the command line are parsed as YAML scalars
(`true`, `3`, `1e-5`, `[1, 2]`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from farm.errors import FarmError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check/convert `value` against the annotation `tp`; raise FarmError naming `key`."""
    origin = get_origin(tp)

    def bad(extra: str = "") -> FarmError:
        return FarmError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r:.80}{extra}",
                         file=source, field=key)

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except FarmError as e:
                errors.append(e)
        raise bad()
    if origin is Literal:
        if value not in get_args(tp):
            raise FarmError(f"must be one of {list(get_args(tp))}, got {value!r}", file=source, field=key)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad()
        return from_dict(tp, value, source=source, prefix=key + ".")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        (inner,) = get_args(tp)[:1] or (Any,)
        items = [_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad()
        args = get_args(tp)
        if args:
            return {k: _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise bad()
    return value


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise FarmError(f"expected a mapping for {cls.__name__}, got {type(data).__name__}", file=source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    renamed = getattr(cls, "RENAMED", {})  # a ClassVar {old key: new dotted key} of a Config whose shape changed
    moved = [k for k in unknown if k in renamed]
    if moved:
        k = moved[0]
        raise FarmError(f"`{prefix}{k}` is now `{prefix}{renamed[k]}`", file=source, field=prefix + str(k),
                        hint=f"rename it to {prefix}{renamed[k]} (a dot is one level of nesting in YAML)")
    if unknown:
        import difflib

        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        raise FarmError(
            f"unknown config key for {cls.__name__}", file=source, field=prefix + str(k),
            hint=(f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(fields)}"),
        )
    kwargs = {k: _coerce(_with_field_default(fields[k], hints[k], v), hints[k], prefix + k, source)
              for k, v in data.items()}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise FarmError(f"missing required config key for {cls.__name__}", file=source, field=prefix + missing[0])
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        if isinstance(e, FarmError):  # one naming its own field: the field as the user wrote it (with the prefix)
            field = prefix + e.field if e.field and not e.field.startswith(prefix) else e.field
            raise FarmError(e.message, file=e.file or source, line=e.line, field=field, hint=e.hint) from None
        raise FarmError(str(e), file=source) from None


def _with_field_default(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A nested block given as a mapping starts from the ENCLOSING class's default for that field (its
    `default_factory`), not from the nested class's own defaults: `dpo.Config.train` declares lr 5e-4 and a
    constant schedule, and `train: {epochs: 2}` must keep them. Mapping-valued fields (`sizes: {eval: 810}`)
    likewise keep the default's other keys."""
    if not isinstance(value, dict):
        return value
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return value
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return deep_merge(_shallow_fields(default), value)
    if isinstance(default, dict) and (get_origin(tp) is dict or tp is dict):
        return deep_merge(default, value)
    return value


def _shallow_fields(obj: Any) -> dict[str, Any]:
    """A dataclass instance → {field: value} one level deep (nested dataclasses stay instances, so a nested
    mapping override merges into THEIR defaults in turn)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = _shallow_fields(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["a=1", "b.c=x"]` → `{"a": 1, "b": {"c": "x"}}` (values parsed as YAML).

    >>> parse_overrides(["lr=1e-5", "ppo.epochs=2", "name=run a", "flag=true"])
    {'lr': '1e-5', 'ppo': {'epochs': 2}, 'name': 'run a', 'flag': True}
    """
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise FarmError(f"override {item!r} is not key=value", field=item)
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise FarmError("conflicting overrides", field=key)
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FarmError("config file not found", file=path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise FarmError(f"malformed YAML: {getattr(e, 'problem', e)}", file=path,
                        line=(mark.line + 1) if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FarmError(f"expected a mapping at the top level, got {type(data).__name__}", file=path)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Defaults of `cls` ← `base` ← YAML file ← `key=value` overrides."""
    data: dict[str, Any] = dict(base or {})
    source = "<defaults>"
    if path is not None:
        data = deep_merge(data, read_yaml(path))
        source = str(path)
    over = parse_overrides(overrides) if overrides else {}
    if over:
        data = deep_merge(data, over)
        source = f"{source} + command line" if path else "command line"
    try:
        return from_dict(cls, data, source=source)
    except FarmError as e:
        raise placed(e, path, over) from None


def placed(e: FarmError, path: str | Path | None, overrides: dict | None = None) -> FarmError:
    """`e` pointed at the line of `path` that holds its field (a key set on the command line stays there)."""
    if path is None or not e.field or e.line is not None:
        return e
    if overrides and _has_key(overrides, e.field):
        return e.at("command line", None)
    return e.at(path, key_line(path, e.field))


def _has_key(data: dict, dotted: str) -> bool:
    node: Any = data
    for part in dotted.replace("[", ".[").split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def key_line(path: str | Path, dotted: str) -> int | None:
    """1-based line of `a.b.c` in a YAML file (of the deepest part of the key that the file has), or None."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in dotted.split("."):
        part = part.split("[")[0]
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == part:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def save_config(cfg: Any, path: str | Path) -> None:
    from farm.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
