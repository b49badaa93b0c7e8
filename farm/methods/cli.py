"""`farm train <method> --config FILE [key=value ...]`: load the method's Config (defaults ← YAML ← key=value),
check that the files and models it names exist, run it, print its metrics. Works the same under
`accelerate launch -m farm.cli train ...`.

The configs in configs/train_*.yaml read their inputs from runs/inputs/, which one command makes:
`farm compare configs/inputs.yaml`. A missing input is a one-line error naming the key, never a traceback.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, is_dataclass
from pathlib import Path

from farm.errors import FarmError

# config keys that name a model to load, and keys that name an input file ('' = not used)
MODEL_KEYS = ("policy", "reward_model", "value_model", "cost_model", "corrector", "rewriter", "reference")
FILE_KEYS = ("data", "eval_data", "preferences", "prompts", "eval_prompts", "harm_preferences")
INPUTS_HINT = "the configs/train_*.yaml read runs/inputs/: make it once with `farm compare configs/inputs.yaml`"


def _parser() -> argparse.ArgumentParser:
    from farm.methods import METHODS, available_methods

    avail = set(available_methods())
    listing = "\n".join(f"  {m}{'' if m in avail else '  (not in this version)'}" for m in METHODS)
    p = argparse.ArgumentParser(
        prog="farm train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one method. Settings come from the method's Config dataclass defaults, then the YAML "
                    "file, then key=value overrides (nested: train.lr=1e-4).",
        epilog=f"methods:\n{listing}\n\nexample: farm train sft --config configs/train_sft.yaml train.max_steps=10"
               f"\n\n{INPUTS_HINT}")
    p.add_argument("method", help="one of the methods listed below")
    p.add_argument("--config", "-c", default=None, help="YAML file with the method's settings")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="key=value settings that win over the file")
    return p


def check_inputs(cfg: object, source: str | None) -> None:
    """A FarmError naming the key for the first input file or local model folder of `cfg` that does not exist
    (hub names such as Qwen/Qwen2.5-0.5B are left to the loader)."""
    from farm.models.loading import is_hub_name

    if not is_dataclass(cfg):
        return
    names = {f.name for f in fields(cfg)}
    for key in (*MODEL_KEYS, *FILE_KEYS):
        value = getattr(cfg, key, None) if key in names else None
        if not isinstance(value, str) or not value or ":" in value or Path(value).exists():
            continue
        if key in MODEL_KEYS and is_hub_name(value):
            continue
        what = "model folder" if key in MODEL_KEYS else "file"
        hint = INPUTS_HINT if value.startswith("runs/inputs") else (
            "give a folder written by save_pretrained, a .gguf file, or a hub name" if key in MODEL_KEYS else
            "give the path of an existing file, or key=... on the command line")
        raise FarmError(f"{what} {value} does not exist", file=source, field=key, hint=hint)


def main(argv: list[str]) -> int:
    from farm.config import load_config, to_dict
    from farm.methods import load_method

    args = _parser().parse_intermixed_args(argv)
    module = load_method(args.method)
    cfg = load_config(module.Config, args.config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    check_inputs(cfg, args.config or "command line")
    try:
        metrics = module.run(cfg)
    except FileNotFoundError as e:
        raise FarmError("file not found", file=e.filename) from None
    except OSError as e:  # e.g. a hub name that is neither cached nor reachable: one line, not the loader's 75
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise FarmError(f"cannot load: {first}", hint="a hub model must be in the local Hugging Face cache when "
                                                      "the hub cannot be reached; check the config's model names") from None
    printable = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(printable, indent=2, default=str))
    return 0
