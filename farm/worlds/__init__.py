"""Worlds: offline task generators with a gold judge and simulated humans. A literal table maps names to modules.

Each world module exposes `build(seed: int, **kwargs)` returning a world object (see farm/worlds/README in the
module docstrings) with splits, a gold quality function and annotator presets.
"""

WORLDS: dict[str, str] = {
    "tasks": "farm.worlds.tasks",
    "harm": "farm.worlds.harm",
}


def available_worlds() -> list[str]:
    import importlib.util

    return [n for n, m in WORLDS.items() if importlib.util.find_spec(m) is not None]
