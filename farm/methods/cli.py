"""`farm train <method> --config FILE [key=value ...]`: load the method's Config (defaults ← YAML ← key=value),
run it, print its metrics. Works the same under `accelerate launch -m farm.cli train ...`."""

from __future__ import annotations

import argparse
import json

from farm.errors import FarmError


def _parser() -> argparse.ArgumentParser:
    from farm.methods import METHODS, available_methods

    avail = set(available_methods())
    listing = "\n".join(f"  {m}{'' if m in avail else '  (not in this version)'}" for m in METHODS)
    p = argparse.ArgumentParser(
        prog="farm train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one method. Settings come from the method's Config dataclass defaults, then the YAML "
                    "file, then key=value overrides (nested: train.lr=1e-4).",
        epilog=f"methods:\n{listing}\n\nexample: farm train sft --config configs/train_sft.yaml train.max_steps=10")
    p.add_argument("method", help="one of the methods listed below")
    p.add_argument("--config", "-c", default=None, help="YAML file with the method's settings")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="key=value settings that win over the file")
    return p


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
    try:
        metrics = module.run(cfg)
    except FileNotFoundError as e:
        raise FarmError("file not found", file=e.filename) from None
    printable = {k: v for k, v in metrics.items() if k != "history"}
    print(json.dumps(printable, indent=2, default=str))
    return 0
