"""A nested block (`train:`) starts from the METHOD's declared defaults: setting one key keeps all the others."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from farm.config import load_config
from farm.errors import FarmError
from farm.methods import METHODS
from farm.methods.loop import RL_TRAIN_READS


def _required(cls) -> dict:
    return {f.name: "x" for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def _nested_blocks(cls):
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            d = f.default_factory()
            if dataclasses.is_dataclass(d):
                yield f.name, d


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 3
    return None


@pytest.mark.parametrize("method", sorted(METHODS))
def test_setting_one_train_key_keeps_every_other_default_the_method_declares(method):
    cls = importlib.import_module(METHODS[method]).Config
    blocks = list(_nested_blocks(cls))
    if not blocks:
        pytest.skip(f"{method} has no nested config block")
    for block, default in blocks:
        for f in dataclasses.fields(default):
            new = _changed(getattr(default, f.name))
            if new is None:
                continue
            try:
                cfg = load_config(cls, base=_required(cls), overrides=[f"{block}.{f.name}={new}"])
            except FarmError as e:  # a key the method does not read is refused by name, never silently ignored
                assert e.field == f"{block}.{f.name}" and "does not read" in e.message, (method, e)
                assert f.name not in RL_TRAIN_READS, (method, f.name)
                continue
            got = getattr(cfg, block)
            assert getattr(got, f.name) == new
            for other in dataclasses.fields(default):
                if other.name != f.name:
                    assert getattr(got, other.name) == getattr(default, other.name), (method, block, f.name,
                                                                                       other.name)


def test_dpo_keeps_its_lr_and_constant_schedule_when_epochs_is_set():
    from farm.methods import dpo

    cfg = load_config(dpo.Config, overrides=["train.epochs=2"])
    assert (cfg.train.lr, cfg.train.schedule, cfg.train.warmup_ratio, cfg.train.epochs) == (1e-4, "constant", 0.0, 2.0)


def test_a_mapping_field_keeps_its_default_keys():
    from farm.run import CompareConfig

    cfg = load_config(CompareConfig, overrides=["world.sizes.eval=810"])
    assert cfg.world.sizes["eval"] == 810 and cfg.world.sizes["sft"] == CompareConfig().world.sizes["sft"]


@pytest.mark.parametrize("method,key", [("ppo", "lora_r=8"), ("rloo", "max_steps=5"), ("grpo", "schedule=cosine")])
def test_an_rl_method_refuses_a_train_key_it_does_not_read(method, key, tmp_path):
    cls = importlib.import_module(METHODS[method]).Config
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  lr: 1.0e-3\n  {key.replace('=', ': ')}\n")
    with pytest.raises(FarmError, match="does not read") as e:
        load_config(cls, cfg)
    assert e.value.field == "train." + key.split("=")[0]
    load_config(cls, overrides=["train.lr=1e-3", "train.seed=3", "train.progress=false"])  # the keys it reads
