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
    "grpo": "farm.methods.grpo",
    "kto": "farm.methods.kto",
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


RUN_LEVEL_TRAIN = ("seed", "device", "progress")
"""run-level settings that also go into every nested `train:` block (safe PPO has two)"""


def compare_settings(config_cls, values: dict) -> dict:
    """The run-level `values` of a pipeline (file paths, seed, device, progress, prompt_style, max_new_tokens, the
    judge) as the nested override dict of method Config `config_cls`: each key goes to the field of that name, or
    where `config_cls.RENAMED` says it moved (`reward_model` → `reward.model`, `seed` → `train.seed`); seed,
    device and progress also go into every nested TrainConfig. Keys the Config has nowhere are left out, and
    nothing else is set: every other value is the method's own default (or the user's YAML).

    >>> from farm.methods.ppo import Config
    >>> compare_settings(Config, {"reward_model": "rm", "seed": 3, "judge": "pool", "prompt_style": "chat"})
    {'reward': {'model': 'rm'}, 'train': {'seed': 3}, 'prompt_style': 'chat'}
    """
    import dataclasses

    from farm.methods.loop import TrainConfig

    out: dict = {}

    def put(path: str, value) -> None:
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    renamed = getattr(config_cls, "RENAMED", {})
    for key, value in values.items():
        if key in fields:
            put(key, value)
        elif key in renamed:
            put(renamed[key], value)

    def train_blocks(cls, prefix: str):  # dotted paths of every nested TrainConfig, from the Config's defaults
        for f in dataclasses.fields(cls):
            if f.default_factory is dataclasses.MISSING:
                continue
            default = f.default_factory()
            if isinstance(default, TrainConfig):
                yield prefix + f.name
            elif dataclasses.is_dataclass(default):
                yield from train_blocks(type(default), f"{prefix}{f.name}.")

    for block in train_blocks(config_cls, ""):
        for key in RUN_LEVEL_TRAIN:
            if key in values:
                put(f"{block}.{key}", values[key])
    return out


def training_annotator(cfg) -> str:
    """The annotator a method asks while it trains (a judge reward's `reward.judge`, online DPO's `judge`), '' if
    none: a pipeline passes the run's own annotator of that name to `run(cfg, annotator=...)`."""
    reward = getattr(cfg, "reward", None)
    return getattr(reward, "judge", "") or getattr(cfg, "judge", "") or ""
