"""`farm world`: generate the offline task world, write its frozen eval set, and calibrate its simulated judges.

    farm world generate OUT [--seed 0] [--sft N] [--preference N] [--unlabeled N] [--eval N] [--families a,b]
    farm world eval-set [--out eval_sets/tasks_eval.json] [--check]
    farm world calibrate [--pairs 4000] [--refit] [--plot calibration.png] [--csv calibration.csv] [--write-docs]
    farm world show [--n 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from farm.errors import FarmError

EVAL_SET_NAME = "tasks_eval.json"
TOLERANCE = 2.0  # points: the calibration goal for the simulated human (issue #3)


def _eval_set_path() -> Path:
    from farm.data import EVAL_SETS

    return EVAL_SETS / EVAL_SET_NAME


def _generate(args: argparse.Namespace) -> int:
    from farm.worlds.tasks import build

    sizes = {k: getattr(args, k) for k in ("sft", "preference", "unlabeled", "eval") if getattr(args, k) is not None}
    families = args.families.split(",") if args.families else None
    t0 = time.time()
    world = build(args.seed, families=families, **sizes)
    paths = world.write(args.out)
    for name, path in paths.items():
        n = len(world.splits[name]) if name in world.splits else ""
        print(f"  {name:<18} {n!s:>6}  {path}")
    print(f"world 'tasks' seed {args.seed} written to {args.out} in {time.time() - t0:.1f}s")
    return 0


def _eval_set(args: argparse.Namespace) -> int:
    from farm.io import read_records, write_records
    from farm.worlds.tasks import build

    out = Path(args.out) if args.out else _eval_set_path()
    records = build(0, sft=0, preference=0, unlabeled=0).eval
    if args.check:
        if not out.exists() or read_records(out) != records:
            print(f"{out} differs from build(0).eval; regenerate it with `farm world eval-set`", file=sys.stderr)
            return 1
        print(f"{out}: {len(records)} prompts, identical to build(0).eval")
        return 0
    write_records(out, records)
    print(f"wrote {len(records)} eval prompts to {out}")
    return 0


def format_table(table) -> str:
    """Target vs achieved, with the gap in points (agreement in %, probabilities ×100)."""
    lines = [f"{'judge':<18} {'source':<32} {'agreement %':>19} {'P(longer)':>17} {'P(first)':>17}",
             f"{'':<18} {'':<32} {'target  got   gap':>19} {'target got  gap':>17} {'target got  gap':>17}"]
    for r in table.itertuples():
        cells = []
        for col, scale in (("agreement", 1), ("p_longer", 100), ("p_first", 100)):
            t, a = getattr(r, f"{col}_target") * scale, getattr(r, col) * scale
            gap = "" if t != t else f"{a - t:+5.1f}"
            cells.append(f"{'  -  ' if t != t else f'{t:5.1f}'} {a:5.1f} {gap:>5}")
        lines.append(f"{r.judge:<18} {str(r.source)[:32]:<32} {cells[0]:>19} {cells[1]:>17} {cells[2]:>17}")
    return "\n".join(lines)


def _calibrate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import farm.annotators.synthetic as synthetic
    from farm.worlds import calibration
    from farm.worlds.tasks import calibration_pairs, quality_parts

    t0 = time.time()
    targets = calibration.load_targets(args.shared)
    pairs = calibration_pairs(args.pairs, args.seed)
    if args.refit:
        fitted, pool = calibration.fit_all(pairs, quality_parts, targets)
        print("refitted presets (paste into farm/annotators/synthetic.py PRESETS to adopt):")
        for name, params in fitted.items():
            changed = {k: v for k, v in asdict(params).items() if v != asdict(synthetic.JudgeParams())[k]}
            args_txt = ", ".join(f"{k}={v!r}" for k, v in changed.items())
            same = "" if params == synthetic.PRESETS[name] else "   # differs from the code"
            print(f'    "{name}": JudgeParams({args_txt}),{same}')
        same = "" if pool == (synthetic.POOL_LENGTH, synthetic.POOL_POSITION) else "   # differs from the code"
        print(f"POOL_LENGTH, POOL_POSITION = {pool[0]!r}, {pool[1]!r}{same}")
        synthetic.PRESETS.update(fitted)  # the table below then shows the refitted judges
        synthetic.POOL_LENGTH, synthetic.POOL_POSITION = pool
    table = calibration.calibration_table(pairs, quality_parts, targets, progress=sys.stderr.isatty())
    source = calibration.targets_path(args.shared) or "figures copied in farm/annotators/synthetic.py TARGETS"
    print(f"\ncalibration on {len(pairs)} pairs of the tasks world (seed {args.seed}); targets from {source}")
    print(format_table(table))
    human = table.iloc[0]
    gaps = [abs(human.agreement - human.agreement_target), 100 * abs(human.p_longer - human.p_longer_target),
            100 * abs(human.p_first - human.p_first_target)]
    ok = max(gaps) <= TOLERANCE
    print(f"\nsimulated human: largest gap {max(gaps):.2f} points ({'within' if ok else 'OUTSIDE'} ±{TOLERANCE:g})"
          f"; {time.time() - t0:.1f}s")
    if args.csv:
        from farm.io import atomic_write_text

        atomic_write_text(args.csv, table.to_csv(index=False))
        print(f"table written to {args.csv}")
    if args.plot:
        print(f"plot written to {calibration.plot_table(table, args.plot)}")
    if args.write_docs:
        _write_docs(table, args, time.time() - t0)
    return 0 if ok else 1


def _write_docs(table, args: argparse.Namespace, seconds: float) -> None:
    """docs/results/world_calibration.json and the two docs/world.md blocks rendered from it."""
    from farm import docblocks
    from farm.worlds import calibration, calibration_doc

    source = (f"`../shared/data/{calibration.LEADERBOARD}`" if calibration.targets_path(args.shared)
              else "the figures copied in `farm/annotators/synthetic.py` TARGETS")
    data = calibration_doc.docs_data(table, pairs=args.pairs, seed=args.seed, source=source, seconds=seconds,
                                     world=calibration_doc.world_figures(args.seed))
    doc, src = docblocks.ROOT / "docs" / "world.md", "docs/results/world_calibration.json"
    docblocks.write_block(doc, "world-calibration", data, src, "farm.worlds.calibration_doc:markdown")
    docblocks.write_block(doc, "world-demonstrations", data, src, "farm.worlds.calibration_doc:world_markdown")
    print(f"wrote {src} and the blocks 'world-calibration', 'world-demonstrations' of {doc}")


def _show(args: argparse.Namespace) -> int:
    from farm.worlds.tasks import FAMILIES, build

    world = build(args.seed, sft=args.n * len(FAMILIES) * 3, preference=0, unlabeled=0, eval=0)
    shown: dict[str, int] = {}
    for r in world.sft:
        if shown.get(r["family"], 0) >= args.n:
            continue
        shown[r["family"]] = shown.get(r["family"], 0) + 1
        q = world.quality(r["instruction"], r["input"], r["output"])
        print(f"[{r['family']:<7}] {r['instruction']} | {r['input']!r} -> {r['output']!r}  (gold {q:.2f})")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm world", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write the splits, the baseline's eval outputs and a manifest to OUT")
    g.add_argument("out")
    g.add_argument("--seed", type=int, default=0)
    for split in ("sft", "preference", "unlabeled", "eval"):
        g.add_argument(f"--{split}", type=int, default=None, help=f"number of {split} records")
    g.add_argument("--families", default=None, help="comma-separated subset of task families")
    e = sub.add_parser("eval-set", help=f"write the frozen eval set (seed 0) to eval_sets/{EVAL_SET_NAME}")
    e.add_argument("--out", default=None)
    e.add_argument("--check", action="store_true", help="only check the file equals build(0).eval")
    c = sub.add_parser("calibrate", help="target vs achieved agreement, P(longer), P(first) for every judge")
    c.add_argument("--pairs", type=int, default=4000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--refit", action="store_true", help="refit the presets first and print them")
    c.add_argument("--plot", default=None, help="save a PNG bar plot here")
    c.add_argument("--csv", default=None, help="save the table as CSV here")
    c.add_argument("--shared", default=None, help="the shared data folder (default ../shared/data)")
    c.add_argument("--write-docs", action="store_true",
                   help="save docs/results/world_calibration.json and re-render docs/world.md's blocks from it")
    s = sub.add_parser("show", help="print a few demonstrations per family with their gold quality")
    s.add_argument("--n", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "calibrate" and args.pairs < 100:
        raise FarmError("--pairs must be at least 100 for a meaningful calibration", field="pairs")
    return {"generate": _generate, "eval-set": _eval_set, "calibrate": _calibrate, "show": _show}[args.cmd](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
