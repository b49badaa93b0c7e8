"""Data locations: the project's own folders and the optional real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ANNOTATOR_PROMPTS = REPO_ROOT / "annotator_prompts"
EVAL_SETS = REPO_ROOT / "eval_sets"
CONFIGS = REPO_ROOT / "configs"


def shared_data_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The real public data folder: `path`, else $FARM_SHARED_DATA, else ../shared/data beside the repo.

    Returns None when absent (tests skip, commands say how to point at it).
    """
    candidates = [path, os.environ.get("FARM_SHARED_DATA"), REPO_ROOT.parent / "shared" / "data",
                  Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None
