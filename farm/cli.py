"""The `farm` command: a thin dispatcher. Each subcommand lives in its own module as `main(argv) -> int`.

A literal table maps names to modules, so `farm --help` never imports torch and a new subcommand is one line.
"""

from __future__ import annotations

import importlib
import sys

from farm.errors import FarmError

# name → (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("farm.ls", "list the judges, pools, methods and worlds farm can find"),
    "annotate": ("farm.annotators.cli", "annotate pairs with a judge or pool (cached, resumable)"),
    "train": ("farm.methods.cli", "train one method (sft, reward, best_of_n, expert_iteration, ppo, dpo, ...)"),
    "evaluate": ("farm.eval.cli_evaluate", "annotate model outputs against a baseline and print a leaderboard"),
    "leaderboard": ("farm.eval.cli_leaderboard", "leaderboard (win rate, SE, intervals, LC) from annotation files"),
    "agreement": ("farm.eval.cli_agreement", "judge meta-evaluation against human labels"),
    "compare": ("farm.run", "the main job: train methods on simulated preferences and rank them"),
    "report": ("farm.report_cli", "re-draw a compare run's report, or print/write its README table"),
    "power": ("farm.eval.cli_power", "how many prompts x seeds detect a difference, from a pilot compare run"),
    "world": ("farm.worlds.cli", "generate the offline world, its eval set, and calibrate its judges"),
    "reproduce": ("farm.reproduce", "reproduce published simulated-vs-human agreement studies"),
    "estimate": ("farm.scale", "estimate memory and time of a training config before running it"),
    "robustness": ("farm.annotators.robustness", "how often adversarial outputs flip each judge"),
}

USAGE = "usage: farm <command> [options]   (farm <command> --help for each)\n\ncommands:\n" + "\n".join(
    f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("farm: compare preference-learning methods with simulated and real judges.\n\n" + USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from farm import __version__

        print(f"farm {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"farm: unknown command '{name}'{hint}\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    from farm.progress import quiet_libraries

    quiet_libraries()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            print(f"farm: '{name}' is not available in this version", file=sys.stderr)
            return 2
        raise
    try:
        return int(module.main(rest) or 0)
    except FarmError as e:
        print(f"farm {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"farm {name}: interrupted; finished work is saved, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
