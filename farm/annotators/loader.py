"""`load_annotator(name_or_dir, **overrides)`: a judge or pool folder → an `Annotator`.

A name is looked up as a folder under annotator_prompts/; a path may point anywhere. A folder whose config.yaml
has `members:` is a pool. Overrides are config keys (`model=`, `base_url=`, `concurrency=`, ...) applied on top
of config.yaml; for a pool they apply to every member judge.

What a judge folder becomes, outermost first:
    RandomSwap (if randomize_order)  ∘  noise (config `noise:`)  ∘  the judge (LLM, replay or synthetic)
In a pool, each member is RandomSwap ∘ member noise ∘ judge noise ∘ judge, and the pool's own noise wraps the pool.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from farm.annotators.config import JudgeConfig, NoiseConfig, PoolConfig
from farm.annotators.pool import Pool, RandomSwap, with_noise
from farm.config import deep_merge, from_dict, read_yaml
from farm.data import ANNOTATOR_PROMPTS
from farm.errors import FarmError
from farm.types import Annotator

_MAX_DEPTH = 8


def available() -> list[str]:
    if not ANNOTATOR_PROMPTS.is_dir():
        return []
    return sorted(d.name for d in ANNOTATOR_PROMPTS.iterdir() if (d / "config.yaml").is_file())


def resolve_folder(name_or_dir: str | Path, relative_to: Path | None = None) -> Path:
    """A judge/pool folder: relative to `relative_to` (a pool's folder), a path, or a name in annotator_prompts/."""
    text = str(name_or_dir)
    # a pool's members resolve beside the pool (or by name), never against the current directory
    first = [relative_to / text] if relative_to is not None else [Path(text)]
    candidates = first + [ANNOTATOR_PROMPTS / text]
    for c in candidates:
        if (c / "config.yaml").is_file():
            return c.resolve()
    close = difflib.get_close_matches(Path(text).name, available(), n=3)
    raise FarmError(f"no judge or pool named {text!r} (a folder holding config.yaml)", field="annotator",
                    hint=(f"did you mean {', '.join(close)}?" if close else
                          "see `farm ls judges`, or give the path of a folder with config.yaml and prompt.txt"))


def load_annotator(name_or_dir: str | Path, **overrides: Any) -> Annotator:
    """The judge or pool at `name_or_dir` (see the module docstring), ready for `annotate_pairs`.

    A name with no folder that is one of the world's simulated judges (farm.annotators.synthetic's
    ANNOTATOR_NAMES, e.g. gpt4_like or alpacafarm_pool) is built from its preset (overrides: its keys).
    """
    try:
        folder = resolve_folder(name_or_dir)
    except FarmError:
        preset = _synthetic_preset(str(name_or_dir))
        if preset is None:
            raise
        from farm.annotators.synthetic import build_synthetic

        seed = overrides.pop("seed", 0)
        config = {"backend": "synthetic", "preset": preset, **overrides}
        return build_synthetic(config, seed, world_quality(config.get("world", "tasks")))
    return _load(folder, overrides, depth=0)


def world_quality(world: object):
    """The gold quality function of the world a simulated judge names (its module imported here: the worlds
    import the simulated judges, never the loader); None for an unknown world (build_synthetic says so)."""
    import importlib

    from farm.worlds import WORLDS

    if not isinstance(world, str) or world not in WORLDS:
        return None
    return importlib.import_module(WORLDS[world]).quality_parts


def _synthetic_preset(name: str) -> str | None:
    try:
        from farm.annotators.synthetic import ANNOTATOR_NAMES
    except ImportError:
        return None
    return name if name in ANNOTATOR_NAMES else None


def _load(folder: Path, overrides: dict[str, Any], depth: int) -> Annotator:
    if depth > _MAX_DEPTH:
        raise FarmError("pools nest too deep (does a pool list itself?)", file=folder / "config.yaml",
                        field="members")
    raw = read_yaml(folder / "config.yaml")
    if "members" in raw:
        return _load_pool(folder, raw, overrides, depth)
    judge, randomize, noise = load_judge(folder, raw, overrides)
    annotator = with_noise(judge, noise)
    return RandomSwap(annotator, salt=folder.name) if randomize else annotator


def load_judge(folder: Path, raw: dict[str, Any], overrides: dict[str, Any]) -> tuple[Annotator, bool, NoiseConfig]:
    """(the bare judge, its randomize_order, its noise) from a judge folder's config."""
    source = str(folder / "config.yaml") + (" + overrides" if overrides else "")
    data = deep_merge(raw, overrides)
    name = folder.name
    if data.get("backend") == "synthetic":
        # the world's simulated judges own their schema; ours are the two wrapper keys
        from farm.annotators.synthetic import build_synthetic

        noise = from_dict(NoiseConfig, data.pop("noise", {}) or {}, source=source, prefix="noise.")
        randomize, seed = data.pop("randomize_order", True), data.pop("seed", 0)
        data.pop("description", None)
        if not isinstance(randomize, bool):
            raise FarmError("expected bool", file=source, field="randomize_order")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FarmError("expected int", file=source, field="seed")
        return build_synthetic(data, seed, world_quality(data.get("world", "tasks"))), randomize, noise
    config = from_dict(JudgeConfig, data, source=source)
    if config.backend == "replay":
        from farm.annotators.replay import ReplayJudge

        return ReplayJudge(name, config, folder), config.randomize_order, config.noise
    from farm.annotators.judge import LLMJudge, read_template

    if config.backend in ("openai", "openai_compatible", "anthropic") and not config.model:
        raise FarmError("an API judge needs a model name", file=source, field="model")
    return LLMJudge(name, config, folder, read_template(folder, config)), config.randomize_order, config.noise


def _load_pool(folder: Path, raw: dict[str, Any], overrides: dict[str, Any], depth: int) -> Annotator:
    config = from_dict(PoolConfig, raw, source=str(folder / "config.yaml"))
    members = []
    for m in config.members:
        member_folder = resolve_folder(m.judge, relative_to=folder)
        member_raw = read_yaml(member_folder / "config.yaml")
        if "members" in member_raw:  # a pool inside a pool draws and swaps by itself
            annotator = with_noise(_load(member_folder, overrides, depth + 1), m.noise)
        else:
            judge, randomize, noise = load_judge(member_folder, member_raw, overrides)
            annotator = with_noise(with_noise(judge, noise), m.noise)
            if m.randomize_order if m.randomize_order is not None else randomize:
                annotator = RandomSwap(annotator, salt=folder.name)
        members.append(annotator)
    pool = Pool(folder.name, members, [m.weight for m in config.members])
    return with_noise(pool, config.noise)
