"""`load_annotator(name_or_dir, **overrides)`: a judge or pool folder → an `Annotator`.

The folder rules (names, paths, pools, swaps, noise) are farm/annotators/folders.py's. What this module adds:
a simulated judge (`backend: synthetic`, e.g. annotator_prompts/gpt4_like/ or the pools alpacafarm_pool and
eval_pool) is built over the gold quality of the world its config names (`world:`, default tasks), that
world's module imported here. The worlds import the simulated judges (farm/annotators/synthetic.py) and the
folder rules, never this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from farm.annotators.config import NoiseConfig
from farm.annotators.folders import available, load_folder, resolve_folder
from farm.annotators.folders import load_judge as _load_judge
from farm.types import Annotator

__all__ = ["available", "load_annotator", "load_judge", "resolve_folder", "world_quality"]


def load_annotator(name_or_dir: str | Path, **overrides: Any) -> Annotator:
    """The judge or pool at `name_or_dir` (see farm/annotators/folders.py), ready for `annotate_pairs`.

    `seed=` is the person a simulated judge is (its draw: human seed=k is person k); other overrides are config
    keys (for a simulated judge: JudgeParams fields such as beta=).
    """
    seed = overrides.pop("seed", None)
    return load_folder(resolve_folder(name_or_dir), overrides, synthetic=build_in_its_world, seed=seed)


def load_judge(folder: Path, raw: dict[str, Any], overrides: dict[str, Any]) -> tuple[Annotator, bool, NoiseConfig]:
    """(the bare judge, its randomize_order, its noise) from a judge folder's config (a simulated judge in the
    world it names)."""
    return _load_judge(folder, raw, overrides, build_in_its_world)


def build_in_its_world(config: dict, seed: int) -> Annotator:
    """A `backend: synthetic` judge over the gold quality of the world its config names (default tasks)."""
    from farm.annotators.synthetic import build_synthetic

    return build_synthetic(config, seed, world_quality(config.get("world", "tasks")))


def world_quality(world: object):
    """The gold quality function of the world a simulated judge names (its module imported here: the worlds
    import the simulated judges, never the loader); None for an unknown world (build_synthetic says so)."""
    import importlib

    from farm.worlds import WORLDS

    if not isinstance(world, str) or world not in WORLDS:
        return None
    return importlib.import_module(WORLDS[world]).quality_parts


def _synthetic_preset(name: str) -> str | None:
    """`name` if it is one of the simulated judges or pools in annotator_prompts/, else None."""
    from farm.annotators.synthetic import ANNOTATOR_NAMES

    return name if name in ANNOTATOR_NAMES else None
