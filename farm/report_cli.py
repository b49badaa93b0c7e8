"""`farm report RUN`: re-draw a finished compare run's report, or print/write its README table.

    farm report runs/quickstart                  # re-draw report.md and figures/ from the run's files
    farm report runs/quickstart --markdown       # print the README table of this run
    farm report runs/quickstart --write-docs     # save docs/results/quickstart.json and re-render README.md's block

It sits beside farm/cli.py, above farm/run.py, because re-drawing a report needs the run's config class.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from farm.eval.report_text import readme_table


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a finished `farm compare` run folder")
    ap.add_argument("--markdown", action="store_true", help="print the README table of this run")
    ap.add_argument("--write-docs", action="store_true",
                    help="save the table's numbers to docs/results/<block>.json and re-render the README block")
    ap.add_argument("--block", default="quickstart", help="name of the README block (default quickstart)")
    args = ap.parse_args(argv)
    from farm.errors import FarmError
    from farm.eval.report import readme_rows

    d = Path(args.run_dir)
    if not (d / "stages.json").exists() or "leaderboard" not in json.loads((d / "stages.json").read_text()):
        raise FarmError("not a finished farm compare run (no leaderboard stage in stages.json)", file=d)
    data = readme_rows(d)
    if args.markdown:
        print(readme_table(data))
    if args.write_docs:
        from farm import docblocks

        doc = docblocks.write_block(docblocks.ROOT / "README.md", args.block, data,
                                    f"docs/results/{args.block}.json", "farm.eval.report_text:readme_table")
        print(f"wrote {doc} block '{args.block}' and docs/results/{args.block}.json")
    if not (args.markdown or args.write_docs):
        from farm.config import load_config
        from farm.eval.report import write_report
        from farm.run import CompareConfig, CompareRun, Stages

        run = CompareRun.__new__(CompareRun)
        run.cfg = load_config(CompareConfig, d / "config.yaml")
        run.dir, run.stages = d.resolve(), Stages(d, print)
        print(write_report(run)["report"])
    return 0
