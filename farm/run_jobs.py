"""The bookkeeping of a `farm compare` run: `stages.json` (each finished stage, written after its files), the
method rows as independent jobs run side by side in worker processes (`workers`), `timing.json` and `run.log`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from farm.io import atomic_write_text
from farm.run_config import seeded


class Stages:
    """`stages.json`: name → result dict of each finished stage (written atomically after its files)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None]):
        self.path = run_dir / "stages.json"
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.earlier = set(self.done)  # finished by an earlier invocation (a resume)
        self.log = log

    def record(self, name: str, result: dict) -> None:
        """A stage finished elsewhere (a worker process), with its own `seconds` and `cpu_seconds`."""
        self.done[name] = result
        atomic_write_text(self.path, json.dumps(self.done, indent=1, default=str) + "\n")
        self.log(f"  {name:<28} done in {result.get('seconds', 0):.1f} s (worker)")

    def run(self, name: str, fn: Callable[[], dict]) -> dict:
        if name in self.done:
            if name in self.earlier:
                self.log(f"  {name:<28} done earlier (resumed)")
            return self.done[name]
        t0, c0 = time.time(), time.process_time()
        self.log(f"  {name:<28} ...")
        result = fn() or {}
        result["seconds"] = round(time.time() - t0, 2)
        result["cpu_seconds"] = round(time.process_time() - c0, 2)  # this process's CPU: steadier under load
        self.done[name] = result
        atomic_write_text(self.path, json.dumps(self.done, indent=1, default=str) + "\n")
        self.log(f"  {name:<28} done in {result['seconds']:.1f} s")
        return result


# rough relative cost of a row, to start the longest jobs first (the workers then finish together); any order gives
# the same results
JOB_COST = {"online_dpo": 10, "ppo": 5, "safe_ppo": 6, "best_of_n": 4, "expert_iteration": 4, "grpo": 3, "dpo": 3,
            "kto": 3, "rloo": 2, "best_of_n_judge": 1, "sft": 1}


def row_jobs(methods: list[str], seeds: Callable[[str], list[int]]) -> list[list[tuple[str, str, str, int]]]:
    """The method rows as independent jobs of (stage name, row, method, seed index) steps. A seed's best_of_n and
    best_of_n_judge share one job: they pick among the same sampled candidates."""
    jobs: dict[tuple, list] = {}
    for m in methods:
        for k in seeds(m):
            row = seeded(m, k)
            stage = f"outputs:{row}" if m == "sft" else f"method:{row}"
            key = ("best_of_n", k) if m in ("best_of_n", "best_of_n_judge") else (m, k)
            jobs.setdefault(key, []).append((stage, row, m, k))
    return list(jobs.values())


def run_parallel(run, jobs: list, sft_model: str, rm: str, job_fn: Callable) -> None:
    """Unfinished jobs in `workers` processes (`job_fn(run_dir, steps, sft_model, rm)` runs one); each finished stage is recorded (and logged) as it lands, so an
    interrupt keeps every finished row."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    todo = [[st for st in job if st[0] not in run.stages.done] for job in jobs]
    todo = [job for job in todo if job]
    if not todo:
        return
    run.log(f"  {len(todo)} jobs in {run.cfg.workers} worker processes ...")
    todo.sort(key=lambda job: -sum(JOB_COST.get(run.plan.method_of(m)[0], 2) for _, _, m, _ in job))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=run.cfg.workers, mp_context=ctx) as pool:
        futures = [pool.submit(job_fn, str(run.dir), steps, sft_model, rm) for steps in todo]
        for f in as_completed(futures):
            for stage, result in f.result():
                run.stages.record(stage, result)



def record_invocation(run, t0: float) -> None:
    """timing.json: the wall time of every invocation that did work (a resumed run adds one)."""
    path = run.p("timing.json")
    runs = json.loads(path.read_text())["invocations"] if path.exists() else []
    fresh = [n for n in run.stages.done if n not in run.stages.earlier]
    if fresh:
        runs.append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)),
                     "seconds": round(time.time() - t0, 1), "stages": len(fresh)})
        atomic_write_text(path, json.dumps({"invocations": runs}, indent=1) + "\n")



def log_to(path: Path) -> None:
    """The `farm` logger (training status lines) also goes to the run's run.log."""
    import logging

    logger = logging.getLogger("farm")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        if getattr(h, "farm_run_log", False):
            logger.removeHandler(h)
            h.close()
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    h.farm_run_log = True
    logger.addHandler(h)


def tee(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """`log` and an append to the run's `run.log` (with the time), for runs nobody watches."""
    def out(line: str) -> None:
        log(line)
        with open(path, "a", encoding="utf-8") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")
    return out


