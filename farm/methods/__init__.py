"""The method zoo. One file per method; this literal table maps names to modules.

Each method module defines `Config` (a dataclass; a docstring per field) and `run(cfg) -> dict`, which reads
its inputs from the files named in the config, writes its outputs (checkpoint, outputs JSON, metrics) under
`cfg.output_dir`, and returns a dict of metrics and paths. Most also expose a Python-level `train(...)`.
"""

METHODS: dict[str, str] = {
    "sft": "farm.methods.sft",
    "reward": "farm.methods.reward",
    "best_of_n": "farm.methods.best_of_n",
    "expert_iteration": "farm.methods.expert_iteration",
    "ppo": "farm.methods.ppo",
    "dpo": "farm.methods.dpo",
    "online_dpo": "farm.methods.online_dpo",
    "rloo": "farm.methods.rloo",
    "safe_ppo": "farm.methods.safe_ppo",
    "rewrite": "farm.methods.rewrite",
    "correct": "farm.methods.correct",
    "critique_revise": "farm.methods.critique_revise",
}


def load_method(name: str):
    """The module of method `name`, or a FarmError listing the known ones."""
    import importlib

    from farm.errors import FarmError

    if name not in METHODS:
        raise FarmError(f"unknown method '{name}'", field="method", hint=f"known: {', '.join(METHODS)}")
    try:
        return importlib.import_module(METHODS[name])
    except ModuleNotFoundError as e:
        if e.name == METHODS[name]:
            raise FarmError(f"method '{name}' is not implemented in this version", field="method") from None
        raise


def available_methods() -> list[str]:
    import importlib.util

    return [n for n, m in METHODS.items() if importlib.util.find_spec(m) is not None]
