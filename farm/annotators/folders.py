"""Judge and pool folders → `Annotator`s: the rules every loader shares.

A name is looked up as a folder under annotator_prompts/; a path may point anywhere. A folder whose config.yaml
has `members:` is a pool. Overrides are config keys (`model=`, `base_url=`, `concurrency=`, ...) applied on top
of config.yaml; for a pool they apply to every member judge (after the member's own `overrides:`).

What a judge folder becomes, outermost first:
    RandomSwap (if randomize_order)  ∘  noise (config `noise:`)  ∘  the judge (LLM, replay or synthetic)
In a pool, each member is RandomSwap ∘ member noise ∘ judge noise ∘ judge, and the pool's own noise wraps the pool.

A `backend: synthetic` judge (a simulated judge of a world) is built by the `synthetic` function the caller
passes: `farm.annotators.load_annotator` resolves the world the folder names, a world's `annotator(name)` passes
its own quality function (farm/annotators/synthetic.py `make_annotator`). This module imports neither, so that
both may import it. `seed` (the person a simulated judge is, its `draw`) applies to a top-level judge only; a
pool's members keep their folders' seeds.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from farm.annotators.config import JudgeConfig, NoiseConfig, PoolConfig
from farm.annotators.pool import Pool, RandomSwap, with_noise
from farm.config import deep_merge, from_dict, read_yaml
from farm.data import ANNOTATOR_PROMPTS
from farm.errors import FarmError
from farm.types import Annotator

SyntheticBuilder = Callable[[dict, int], Annotator]  # (the judge's config, its draw) → the simulated judge
_MAX_DEPTH = 8


def available(root: Path = ANNOTATOR_PROMPTS) -> list[str]:
    """The folder names under `root` (annotator_prompts/) that hold a config.yaml."""
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "config.yaml").is_file())


def find_folder(name_or_dir: str | Path, relative_to: Path | None = None) -> Path | None:
    """The judge/pool folder for a name or path (see `resolve_folder`), or None."""
    text = str(name_or_dir)
    # a pool's members resolve beside the pool (or by name), never against the current directory
    first = [relative_to / text] if relative_to is not None else [Path(text)]
    for c in [*first, ANNOTATOR_PROMPTS / text]:
        if (c / "config.yaml").is_file():
            return c.resolve()
    return None


def resolve_folder(name_or_dir: str | Path, relative_to: Path | None = None) -> Path:
    """A judge/pool folder: relative to `relative_to` (a pool's folder), a path, or a name in annotator_prompts/."""
    found = find_folder(name_or_dir, relative_to)
    if found is not None:
        return found
    text = str(name_or_dir)
    close = difflib.get_close_matches(Path(text).name, available(), n=3)
    raise FarmError(f"no judge or pool named {text!r} (a folder holding config.yaml)", field="annotator",
                    hint=(f"did you mean {', '.join(close)}?" if close else
                          "see `farm ls judges`, or give the path of a folder with config.yaml and prompt.txt"))


def is_simulated(folder: Path, depth: int = 0) -> bool:
    """Whether a folder is a `backend: synthetic` judge, or a pool whose members all are."""
    try:
        raw = read_yaml(folder / "config.yaml")
    except FarmError:
        return False
    if "members" not in raw:
        return raw.get("backend") == "synthetic"
    members = raw.get("members") or []
    found = [find_folder(m.get("judge", ""), folder) if isinstance(m, dict) else None for m in members]
    return bool(found) and depth < _MAX_DEPTH and all(f is not None and is_simulated(f, depth + 1) for f in found)


def simulated_names(root: Path = ANNOTATOR_PROMPTS) -> tuple[str, ...]:
    """The folders of `root` that are simulated judges or pools of them (`farm ls` marks them synthetic)."""
    return tuple(n for n in available(root) if is_simulated(root / n))


def load_folder(folder: Path, overrides: dict[str, Any], synthetic: SyntheticBuilder | None = None,
                seed: int | None = None, depth: int = 0) -> Annotator:
    """The annotator a judge or pool folder defines (see the module docstring)."""
    if depth > _MAX_DEPTH:
        raise FarmError("pools nest too deep (does a pool list itself?)", file=folder / "config.yaml",
                        field="members")
    raw = read_yaml(folder / "config.yaml")
    if "members" in raw:
        return _load_pool(folder, raw, overrides, synthetic, depth)
    judge, randomize, noise = load_judge(folder, raw, overrides, synthetic, seed)
    annotator = with_noise(judge, noise)
    return RandomSwap(annotator, salt=folder.name) if randomize else annotator


def load_judge(folder: Path, raw: dict[str, Any], overrides: dict[str, Any], synthetic: SyntheticBuilder | None = None,
               seed: int | None = None) -> tuple[Annotator, bool, NoiseConfig]:
    """(the bare judge, its randomize_order, its noise) from a judge folder's config."""
    source = str(folder / "config.yaml") + (" + overrides" if overrides else "")
    data = deep_merge(raw, overrides)
    name = folder.name
    if data.get("backend") == "synthetic":
        # the world's simulated judges own their schema; ours are the wrapper keys
        noise = from_dict(NoiseConfig, data.pop("noise", {}) or {}, source=source, prefix="noise.")
        randomize, file_seed = data.pop("randomize_order", True), data.pop("seed", 0)
        data.pop("description", None)
        data.setdefault("name", name)  # a copied folder is a judge of its own name (a pool member: overrides)
        if not isinstance(randomize, bool):
            raise FarmError("expected bool", file=source, field="randomize_order")
        if isinstance(file_seed, bool) or not isinstance(file_seed, int):
            raise FarmError("expected int", file=source, field="seed")
        if synthetic is None:
            raise FarmError("a simulated judge needs a world's quality function", file=source, field="backend",
                            hint="load it with farm.annotators.load_annotator, or a world's annotator(name)")
        return synthetic(data, file_seed if seed is None else seed), randomize, noise
    config = from_dict(JudgeConfig, data, source=source)
    if config.backend == "replay":
        from farm.annotators.replay import ReplayJudge

        return ReplayJudge(name, config, folder), config.randomize_order, config.noise
    from farm.annotators.judge import LLMJudge, read_template

    if config.backend in ("openai", "openai_compatible", "anthropic") and not config.model:
        raise FarmError("an API judge needs a model name", file=source, field="model")
    return LLMJudge(name, config, folder, read_template(folder, config)), config.randomize_order, config.noise


def _load_pool(folder: Path, raw: dict[str, Any], overrides: dict[str, Any], synthetic: SyntheticBuilder | None,
               depth: int) -> Annotator:
    config = from_dict(PoolConfig, raw, source=str(folder / "config.yaml"))
    members = []
    for m in config.members:
        member_folder = resolve_folder(m.judge, relative_to=folder)
        member_raw = read_yaml(member_folder / "config.yaml")
        if "members" in member_raw:  # a pool inside a pool draws and swaps by itself
            inner = deep_merge(m.overrides, overrides)
            annotator = with_noise(load_folder(member_folder, inner, synthetic, depth=depth + 1), m.noise)
        else:
            judge, randomize, noise = load_judge(member_folder, deep_merge(member_raw, m.overrides), overrides,
                                                 synthetic)
            annotator = with_noise(with_noise(judge, noise), m.noise)
            if m.randomize_order if m.randomize_order is not None else randomize:
                annotator = RandomSwap(annotator, salt=folder.name)
        members.append(annotator)
    pool = Pool(folder.name, members, [m.weight for m in config.members], draw=config.draw)
    return with_noise(pool, config.noise)
