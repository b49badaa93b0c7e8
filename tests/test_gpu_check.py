"""bench/gpu_check.sh rehearsed on the CPU with the tiny size: the script a GPU session runs must work before it
gets its few minutes of GPU (it has not run on a GPU yet: docs/scaling.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_sft_dpo_ppo_and_puts_estimates_beside_measured_peaks(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--size", "tiny", "--device", "cpu", "--out",
                           str(out), "--work", str(tmp_path / "work")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert set(d["phases"]) == {"sft", "dpo", "ppo"} and d["device"] == "cpu"
    for method, r in d["phases"].items():
        assert r["tokens_per_s"] > 0 and r["peak_bytes"] > 0, method
        assert 0.3 < r["estimate_bytes"] / r["peak_bytes"] < 3.0, (method, r)  # the same budget, roughly
    assert d["phases"]["ppo"]["split_s"]["time_generation"] > 0
    from bench.gpu_check import markdown

    assert "| ppo |" in markdown(d)
