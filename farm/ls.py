"""`farm ls`: what farm can find — judges (folders in annotator_prompts/), pools, methods, worlds."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from farm.data import ANNOTATOR_PROMPTS


def list_judges(root: Path = ANNOTATOR_PROMPTS) -> list[dict]:
    """One row per folder of `root` holding a config.yaml: name, kind (judge/pool), backend (a pool of simulated
    judges: synthetic), model (a simulated judge: its preset)."""
    from farm.annotators.folders import is_simulated

    rows = []
    if not root.is_dir():
        return rows
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        cfg_path = d / "config.yaml"
        if not cfg_path.exists():
            continue
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError:
            cfg = {"backend": "<malformed config.yaml>"}
        kind = "pool" if "members" in cfg else "judge"
        backend = cfg.get("backend", "pool" if kind == "pool" else "?")
        if kind == "pool" and is_simulated(d):
            backend = "synthetic"
        rows.append({"name": d.name, "kind": kind, "backend": backend,
                     "model": cfg.get("model", "") or cfg.get("preset", "")})
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm ls", description=__doc__)
    ap.add_argument("what", nargs="?", choices=["all", "judges", "methods", "worlds"], default="all")
    args = ap.parse_args(argv)
    if args.what in ("all", "judges"):
        print(f"judges and pools ({ANNOTATOR_PROMPTS}):")
        for r in list_judges():  # backend synthetic: a simulated judge of the world (or a pool of them)
            print(f"  {r['name']:<32} {r['kind']:<6} {r['backend']:<14} {r['model']}")
    if args.what in ("all", "methods"):
        from farm.methods import METHODS, available_methods

        avail = set(available_methods())
        print("methods:")
        for n in METHODS:
            print(f"  {n:<32} {'' if n in avail else '(not in this version)'}")
    if args.what in ("all", "worlds"):
        from farm.worlds import WORLDS, available_worlds

        avail = set(available_worlds())
        print("worlds:")
        for n in WORLDS:
            print(f"  {n:<32} {'' if n in avail else '(not in this version)'}")
    return 0
