"""The offline task world: short instructions with checkable answers, a graded gold quality, mixed-quality
demonstrations, a fixed baseline policy, and simulated annotators calibrated to human statistics.

Sized for tiny CPU policies (≈1M parameters, a BPE vocabulary of a few hundred tokens trained on this text):
prompts are a one-line instruction plus a short input (≲ 40 tokens), answers are ≲ 30 tokens, and everything
is built from 24 words and the numbers 1–40.

Families (a literal table, `FAMILIES`): sort, reverse, add, upper, count, max, json, repeat, bullets.

Gold quality `quality(instruction, input, output)` ∈ [0, 1] is recomputed from the prompt alone, so it scores
any string a policy writes (garbage → 0):
1. known filler phrases ("Sure!", "Here is the answer:", "Hope this helps!", …) are stripped from both ends and
   counted; what remains is the *core*;
2. the family scores the core: 0.25 for an answer of the right *shape* (k numbers, k words, a bare number,
   a list of k items), 0.75 for its *content* against the reference answer, with partial credit (sequence
   overlap squared for list-like answers, 0.5^|error| for numbers, JSON validity and key for `json`);
3. fillers cost `filler_penalty(n)`: the first two ("Sure! Here is the answer:") are free, a third costs 0.04,
   every further one 0.1. Gold is indifferent to the usual padding that length-loving judges reward, mildly
   dislikes more, and strongly dislikes rambling — which is what makes over-optimisation visible.

Demonstrations come from a generator with a *skill* level (probability of a correct core; otherwise a mild,
severe or garbage mistake) and a style (terse, lead-in, polite, chatty) that is more verbose at higher skill, as
better real models are. SFT data mixes skills (`DEMO_SKILLS`), so an SFT policy is improvable by preferences.
The baseline policy is the same generator at `BASELINE_SKILL`, seeded by the prompt only, so its outputs on the
frozen eval set never change.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import FarmError
from farm.types import Annotator, Pair, stable_seed

VERSION = "tasks-2"  # bump when the gold quality or the generator changes: judges' identities (caches) change too
WORDS = tuple("cat dog fox owl bee cow red blue green pink gold sun moon star tree rock rain lake boat car cup key hat "
              "cake".split())
WORD_SET = frozenset(WORDS)
MAX_NUMBER = 40  # numbers are 1..40: frequent enough that each is one BPE token a tiny model learns quickly
SHAPE_WEIGHT = 0.25  # share of a core's score for the right shape of answer, whatever its content
PREFIX_FILLERS = ("Sure!", "Of course!", "Certainly!", "Here is the answer:", "The answer is", "Answer:")
SUFFIX_FILLERS = ("Hope this helps!", "Let me know if you need more help.", "Thanks!")
FILLER_COSTS, RAMBLE_COST = (0.0, 0.0, 0.04), 0.10  # cost of the 1st, 2nd, 3rd filler; of each further one

DEMO_SKILLS = ((0.95, 0.4), (0.7, 0.3), (0.4, 0.2), (0.1, 0.1))  # (skill, share of SFT demonstrations)
BASELINE_SKILL = 0.1  # weak: a tiny SFT policy on a CPU budget should be able to approach it
DEFAULT_SIZES = {"sft": 10_000, "preference": 10_000, "unlabeled": 20_000, "eval": 810}
SPLITS = ("eval", "sft", "preference", "unlabeled")  # generation order: later splits avoid earlier prompts


# ----- partial-credit helpers -----

def _lcs(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (O(len(a)·len(b)); inputs are short)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def overlap(got: Sequence, ref: Sequence) -> float:
    """Dice overlap 2·LCS/(|got|+|ref|) in [0, 1]: order-aware partial credit.

    >>> overlap("1 3 7".split(), "1 3 7".split()), overlap("3 1 7".split(), "1 3 7".split()), overlap([], ["a"])
    (1.0, 0.6666666666666666, 0.0)
    """
    if not got or not ref:
        return 0.0
    return 2.0 * _lcs(got, ref) / (len(got) + len(ref))


def _numbers(text: str) -> list[int]:
    return [int(t) for t in re.findall(r"-?\d+", text)]


def _mix(shape: float, content: float) -> float:
    """Core score: SHAPE_WEIGHT for an answer of the right shape (k numbers, k words, a bare number, a list of
    k items) whatever its content, the rest for the content. Learnable early, so tiny policies get a signal."""
    return SHAPE_WEIGHT * shape + (1 - SHAPE_WEIGHT) * content


def _tokens(core: str) -> list[str]:
    return core.replace(",", " ").split()


def _shape(ok_tokens: bool, n: int, k: int) -> float:
    """1 for k tokens of the right kind, 0.5 for another number of them, 0 otherwise."""
    return 0.0 if not ok_tokens or n == 0 else 1.0 if n == k else 0.5


def _numeric_score(core: str, target: int, credit: Callable[[int], float]) -> float:
    """The last number in the core is the answer (content); a bare number is the right shape."""
    nums = _numbers(core)
    if not nums:
        return 0.0
    shape = 1.0 if core.strip() == str(nums[-1]) else 0.5
    return _mix(shape, 1.0 if nums[-1] == target else credit(nums[-1]))


# ----- families: make an input, the reference answer, graded score of a core, typical mistakes -----

@dataclass(frozen=True)
class Family:
    """One task family. `templates` maps each instruction text to its parameters (e.g. sort direction)."""

    name: str
    templates: dict[str, dict]
    make_input: Callable[[np.random.Generator, dict], str]
    answer: Callable[[str, dict], str]
    score: Callable[[str, str, dict], float]  # (core, input, params) → [0, 1]
    mild: Callable[[str, str, dict, np.random.Generator], str]  # (answer, input, params, rng) → near miss
    severe: Callable[[str, str, dict, np.random.Generator], str]  # → plausible but wrong answer


def _nums_input(rng: np.random.Generator, lo: int = 3, hi: int = 4) -> list[int]:
    return [int(x) for x in rng.choice(MAX_NUMBER, size=int(rng.integers(lo, hi + 1)), replace=False) + 1]


def _words_input(rng: np.random.Generator, lo: int, hi: int) -> list[str]:
    return [WORDS[i] for i in rng.choice(len(WORDS), size=int(rng.integers(lo, hi + 1)), replace=False)]


def _swap_or_drop(tokens: list[str], rng: np.random.Generator) -> list[str]:
    tokens = list(tokens)
    if len(tokens) > 1 and rng.random() < 0.6:
        i = int(rng.integers(len(tokens) - 1))
        tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    elif len(tokens) > 1:
        del tokens[int(rng.integers(len(tokens)))]
    return tokens


def _seq_score(core: str, ref: str, kind: Callable[[str], bool]) -> float:
    """Sequence answers (sort, reverse, repeat): shape = k tokens of the right kind, content = overlap²."""
    toks, ref_toks = _tokens(core), ref.split()
    return _mix(_shape(all(map(kind, toks)), len(toks), len(ref_toks)), overlap(toks, ref_toks) ** 2)


def _is_number(t: str) -> bool:
    return t.isdigit()


def _is_word(t: str) -> bool:
    return t in WORD_SET


def _sort_answer(inp: str, p: dict) -> str:
    return " ".join(map(str, sorted(_numbers(inp), reverse=p["desc"])))


def _add_answer(inp: str, p: dict) -> str:
    return str(sum(_numbers(inp)))


def _max_score(core: str, inp: str, p: dict) -> float:
    ranked = sorted(_numbers(inp), reverse=True)

    def credit(x: int) -> float:  # a number from the list gets credit by its rank, others none
        return 0.1 + 0.4 * (1 - ranked.index(x) / (len(ranked) - 1)) if x in ranked else 0.0

    return _numeric_score(core, ranked[0], credit)


def _upper_score(core: str, inp: str, p: dict) -> float:
    toks, ref = core.split(), inp.upper().split()
    shape = _shape(all(t.isalpha() and t.isupper() for t in toks), len(toks), len(ref))
    right_words = overlap([t.upper() for t in toks], ref)  # the right words, whatever their case
    return _mix(shape, (0.4 * right_words + 0.6 * overlap(toks, ref)) ** 2)


def _json_target(inp: str, p: dict) -> str:
    words = inp.split()
    return words[0] if p["which"] == "first" else words[-1]


def _json_score(core: str, inp: str, p: dict) -> float:
    target, words = _json_target(inp, p), inp.split()
    try:
        obj = json.loads(core)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and len(obj) == 1:
        value = next(iter(obj.values()))
        right = 1.0 if value == target else 0.2 if value in words else 0.0
        return (0.3 + 0.7 * right) if "answer" in obj else (0.2 + 0.5 * right)
    seen = re.findall(r"[a-z]+", core)
    if target in seen:  # right word, wrong format
        return 0.35 if len(set(seen) - {"answer"}) == 1 else 0.2
    return 0.0


def _bullet_items(core: str) -> tuple[list[str], float]:
    """The words of a list answer and the share of its items marked "- " (robust to lost newlines)."""
    lines = [x.strip() for x in core.splitlines() if x.strip()]
    if len(lines) == 1 and lines[0].startswith("- "):  # "- cat - dog": a list whose newlines were lost
        lines = ["- " + x.strip() for x in re.split(r"(?:^|\s)- ", lines[0]) if x.strip()]
    elif len(lines) == 1:  # "cat, dog"
        lines = [x.strip() for x in lines[0].split(",") if x.strip()]
    marked = sum(x.startswith("- ") for x in lines) / max(1, len(lines))
    items = [re.sub(r"^(?:[-*•]|\d+[.)])\s*", "", x) for x in lines]
    return [w for item in items for w in item.split()], marked


def _bullets_score(core: str, inp: str, p: dict) -> float:
    items, marked = _bullet_items(core)
    shape = marked * (1.0 if len(items) == len(inp.split()) else 0.5)
    return _mix(shape, overlap(items, inp.split()) ** 2)


def _bullets_mild(ans: str, inp: str, p: dict, rng: np.random.Generator) -> str:
    words = [x[2:] for x in ans.splitlines()]
    if rng.random() < 0.5:
        return ", ".join(words)
    return "\n".join(f"{i}. {w}" for i, w in enumerate(words, 1))


def _repeat_mild(ans: str, inp: str, p: dict, rng: np.random.Generator) -> str:
    return " ".join([inp] * (p["times"] + (1 if rng.random() < 0.5 else -1)))


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family(
        "sort",
        {"Sort the numbers from smallest to largest.": {"desc": False},
         "Put the numbers in increasing order.": {"desc": False},
         "Sort the numbers from largest to smallest.": {"desc": True}},
        make_input=lambda rng, p: " ".join(map(str, _nums_input(rng))),
        answer=_sort_answer,
        score=lambda core, inp, p: _seq_score(core, _sort_answer(inp, p), _is_number),
        mild=lambda ans, inp, p, rng: " ".join(_swap_or_drop(ans.split(), rng)),
        severe=lambda ans, inp, p, rng: " ".join(ans.split()[::-1]),
    ),
    Family(
        "reverse",
        {"Reverse the order of the words.": {}, "Write the words in reverse order.": {}},
        make_input=lambda rng, p: " ".join(_words_input(rng, 2, 4)),
        answer=lambda inp, p: " ".join(inp.split()[::-1]),
        score=lambda core, inp, p: _seq_score(core, " ".join(inp.split()[::-1]), _is_word),
        mild=lambda ans, inp, p, rng: " ".join(_swap_or_drop(ans.split(), rng)),
        severe=lambda ans, inp, p, rng: " ".join(ans.split()[::-1]),  # the input, unchanged
    ),
    Family(
        "add",
        {"Add the two numbers.": {}, "What is the sum of the numbers?": {}},
        make_input=lambda rng, p: f"{int(rng.integers(1, 21))} + {int(rng.integers(1, 21))}",
        answer=_add_answer,
        score=lambda core, inp, p: _numeric_score(core, int(_add_answer(inp, p)),
                                                  lambda x: 0.5 ** abs(x - int(_add_answer(inp, p)))),
        mild=lambda ans, inp, p, rng: str(int(ans) + int(rng.choice([-2, -1, 1, 2]))),
        severe=lambda ans, inp, p, rng: str(int(ans) + int(rng.choice([-10, -5, 5, 10]))),
    ),
    Family(
        "upper",
        {"Write the words in capital letters.": {}, "Convert the words to uppercase.": {}},
        make_input=lambda rng, p: " ".join(_words_input(rng, 1, 2)),
        answer=lambda inp, p: inp.upper(),
        score=_upper_score,
        mild=lambda ans, inp, p, rng: ans.title() if rng.random() < 0.5 else ans[:-1] + ans[-1].lower(),
        severe=lambda ans, inp, p, rng: ans.lower(),
    ),
    Family(
        "count",
        {"How many words are in the list?": {}, "Count the words.": {}},
        make_input=lambda rng, p: " ".join(_words_input(rng, 2, 5)),
        answer=lambda inp, p: str(len(inp.split())),
        score=lambda core, inp, p: _numeric_score(core, len(inp.split()),
                                                  lambda x: 0.5 ** abs(x - len(inp.split()))),
        mild=lambda ans, inp, p, rng: str(int(ans) + int(rng.choice([-1, 1]))),
        severe=lambda ans, inp, p, rng: str(int(ans) + int(rng.choice([2, 3, 4]))),
    ),
    Family(
        "max",
        {"Which number is the largest?": {}, "Pick the biggest number.": {}},
        make_input=lambda rng, p: " ".join(map(str, _nums_input(rng))),
        answer=lambda inp, p: str(max(_numbers(inp))),
        score=_max_score,
        mild=lambda ans, inp, p, rng: str(sorted(_numbers(inp))[-2]),  # the runner-up
        severe=lambda ans, inp, p, rng: str(min(_numbers(inp)) if rng.random() < 0.7 else int(ans) + 5),
    ),
    Family(
        "json",
        {"Give the first word as JSON.": {"which": "first"}, "Return the last word in JSON.": {"which": "last"}},
        make_input=lambda rng, p: " ".join(_words_input(rng, 2, 3)),
        answer=lambda inp, p: json.dumps({"answer": _json_target(inp, p)}),
        score=_json_score,
        mild=lambda ans, inp, p, rng: ans.replace('"', "", 2)[:-1] if rng.random() < 0.5 else ans[:-1],
        severe=lambda ans, inp, p, rng: json.loads(ans)["answer"],
    ),
    Family(
        "repeat",
        {"Repeat the words two times.": {"times": 2}, "Repeat the words three times.": {"times": 3},
         "Say the words three times.": {"times": 3}},
        make_input=lambda rng, p: " ".join(_words_input(rng, 1, 2)),
        answer=lambda inp, p: " ".join([inp] * p["times"]),
        score=lambda core, inp, p: _seq_score(core, " ".join([inp] * p["times"]), _is_word),
        mild=_repeat_mild,
        severe=lambda ans, inp, p, rng: " ".join(ans.split()[: len(ans.split()) // 3 or 1]),
    ),
    Family(
        "bullets",
        {"Write each word as a list item.": {}, "Make a bulleted list of the words.": {}},
        make_input=lambda rng, p: " ".join(_words_input(rng, 2, 3)),
        answer=lambda inp, p: "\n".join(f"- {w}" for w in inp.split()),
        score=_bullets_score,
        mild=_bullets_mild,
        severe=lambda ans, inp, p, rng: " ".join(x[2:] for x in ans.splitlines()),
    ),
]}
TEMPLATES: dict[str, tuple[str, dict]] = {t: (f.name, p) for f in FAMILIES.values() for t, p in f.templates.items()}


def parse_instruction(instruction: str) -> tuple[Family, dict]:
    """The family and parameters of an instruction of this world (FarmError for any other instruction)."""
    key = " ".join(instruction.split())
    if key not in TEMPLATES:
        raise FarmError(f"instruction {instruction!r} is not one of the task world's", field="instruction",
                        hint="the gold judge of world 'tasks' only scores prompts generated by farm.worlds.tasks")
    name, params = TEMPLATES[key]
    return FAMILIES[name], params


# ----- gold quality -----

def strip_fillers(output: str) -> tuple[str, int]:
    """(core, number of filler phrases removed from both ends).

    >>> strip_fillers("Sure! Here is the answer: 1 3 7. Hope this helps!")
    ('1 3 7', 3)
    """
    core, n = output.strip(), 0
    changed = True
    while changed:
        changed = False
        for f in PREFIX_FILLERS:
            if core.lower().startswith(f.lower()):
                core, n, changed = core[len(f):].strip(), n + 1, True
        for f in SUFFIX_FILLERS:
            if core.lower().endswith(f.lower()):
                core, n, changed = core[: -len(f)].strip(), n + 1, True
    if core.endswith(".") and "\n" not in core:
        core = core[:-1].strip()
    return core, n


def filler_penalty(n: int) -> float:
    """Gold's cost of n filler phrases: a lead-in or "Sure! Here is the answer:" is free, a third phrase costs a
    little (FILLER_COSTS), every further one (rambling) RAMBLE_COST.

    >>> [round(filler_penalty(n), 2) for n in range(6)]
    [0.0, 0.0, 0.0, 0.04, 0.14, 0.24]
    """
    return sum(FILLER_COSTS[:n]) + RAMBLE_COST * max(0, n - len(FILLER_COSTS))


@functools.lru_cache(maxsize=200_000)
def quality_parts(instruction: str, input: str, output: str) -> dict[str, Any]:
    """Gold quality and its parts: {quality, core_score, penalty, fillers, family}. Cached (pure function)."""
    family, params = parse_instruction(instruction)
    core, n_fill = strip_fillers(output)
    try:
        core_score = family.score(core, input, params) if core else 0.0
    except (IndexError, ValueError, KeyError) as e:  # an input this family never generates (e.g. no numbers)
        raise FarmError(f"input {input!r} is not a '{family.name}' task input ({type(e).__name__}: {e})",
                        field="input", hint="the gold judge scores prompts generated by farm.worlds.tasks") from None
    penalty = filler_penalty(n_fill)
    q = float(np.clip(core_score - penalty, 0.0, 1.0)) if core_score > 0 else 0.0
    return {"quality": q, "core_score": float(core_score), "penalty": penalty, "fillers": n_fill,
            "family": family.name}


def quality(instruction: str, input: str, output: str) -> float:
    """Gold quality of `output` in [0, 1] (see the module docstring).

    >>> quality("Add the two numbers.", "12 + 7", "19"), quality("Add the two numbers.", "12 + 7", "20")
    (1.0, 0.625)
    >>> quality("Add the two numbers.", "12 + 7", "Sure! The answer is 19. Thanks!"), quality("Count the words.", "a b", "zzz")
    (0.96, 0.0)
    """
    return quality_parts(instruction, input, output)["quality"]


# ----- the demonstration generator (mixed quality) and the baseline policy -----

STYLES = ("terse", "lead", "polite", "chatty")


def _style_probs(skill: float) -> np.ndarray:
    # better "models" are chattier, as in real instruction data; terse dominates at low skill
    w = np.array([0.05 + 1.6 * (1 - skill), 0.3, 0.2 + 0.8 * skill, 0.05 + 0.4 * skill])
    return w / w.sum()


def _dress(core: str, style: str, rng: np.random.Generator) -> str:
    sep = "\n" if "\n" in core else " "
    if style == "terse":
        return core
    if style == "lead":
        lead = ("The answer is", "Answer:")[int(rng.integers(2))]
        return f"{lead}{sep}{core}" + ("." if lead == "The answer is" and sep == " " else "")
    # few phrasings (gold knows more): a tiny policy should spend its capacity on the answer, not on wording
    opener = ("Sure!", "Of course!")[int(rng.integers(2))]
    text = f"{opener} Here is the answer:{sep}{core}"
    if style == "chatty":
        text += f"{sep}{('Hope this helps!', 'Thanks!')[int(rng.integers(2))]}"
    return text


def _mistake(family: Family, params: dict, inp: str, ans: str, rng: np.random.Generator) -> str:
    """A wrong core: a near miss (45%), a plausible wrong answer (20%), a cut-off answer (20%), or garbage."""
    u = rng.random()
    if u < 0.45:
        return family.mild(ans, inp, params, rng)
    if u < 0.65:
        return family.severe(ans, inp, params, rng)
    if u < 0.85:  # stopped early: the first half of the answer (weak models often do)
        return ans[: max(1, len(ans) // 2)].strip()
    n = int(rng.integers(1, 6))
    return " ".join(WORDS[i] for i in rng.integers(len(WORDS), size=n))


def sample_output(instruction: str, input: str, rng: np.random.Generator, skill: float) -> str:
    """One output of a policy with `skill` = P(correct core), dressed in a skill-dependent style."""
    family, params = parse_instruction(instruction)
    ans = family.answer(input, params)
    core = ans if rng.random() < skill else _mistake(family, params, input, ans, rng)
    if not core.strip():
        core = ans.split()[0]
    return _dress(core, STYLES[int(rng.choice(len(STYLES), p=_style_probs(skill)))], rng)


def draw_skill(rng: np.random.Generator) -> float:
    skills, shares = zip(*DEMO_SKILLS)
    return float(skills[int(rng.choice(len(skills), p=np.array(shares) / sum(shares)))])


# ----- the world -----

@dataclass
class TaskWorld:
    """Splits (lists of {id, family, instruction, input}; `sft` also has `output`) and everything to judge them."""

    seed: int
    splits: dict[str, list[dict]]
    families: tuple[str, ...] = field(default_factory=lambda: tuple(FAMILIES))
    name: str = "tasks"
    baseline_skill: float = BASELINE_SKILL

    @property
    def sft(self) -> list[dict]:
        return self.splits["sft"]

    @property
    def preference(self) -> list[dict]:
        return self.splits["preference"]

    @property
    def unlabeled(self) -> list[dict]:
        return self.splits["unlabeled"]

    @property
    def eval(self) -> list[dict]:
        return self.splits["eval"]

    def quality(self, instruction: str, input: str, output: str) -> float:
        return quality(instruction, input, output)

    def sample_demo(self, prompt: dict, rng: np.random.Generator, skill: float | None = None) -> str:
        """An output for `prompt` from the demonstration mix (or at a given skill)."""
        skill = draw_skill(rng) if skill is None else skill
        return sample_output(prompt["instruction"], prompt.get("input", ""), rng, skill)

    def baseline_outputs(self, prompts: Sequence[dict]) -> list[dict]:
        """The fixed baseline policy's outputs as AlpacaEval model_outputs records (generator "baseline")."""
        out = []
        for p in prompts:
            rng = np.random.default_rng(stable_seed("baseline", p["instruction"], p.get("input", "")))
            rec = {"instruction": p["instruction"], "input": p.get("input", ""),
                   "output": sample_output(p["instruction"], p.get("input", ""), rng, self.baseline_skill),
                   "generator": "baseline"}
            rec.update({k: p[k] for k in ("id", "family") if k in p})
            out.append(rec)
        return out

    def pairs(self, n: int = 4000, seed: int = 0) -> list[Pair]:
        """Calibration pairs: fresh prompts of this world's families, two demonstration-mix outputs each."""
        return calibration_pairs(n, stable_seed(self.seed, seed), self.families)

    def annotator(self, name: str, seed: int = 0) -> Annotator:
        """A simulated annotator: `gold`, `human` (seed = which independent person), a preset from
        `farm.annotators.synthetic.PRESETS`, `alpacafarm_pool` (training pool, 25% flips) or `eval_pool`."""
        from farm.annotators.synthetic import make_annotator

        return make_annotator(name, quality_parts, seed=seed)

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write every split, the baseline's eval outputs and a small manifest as JSON; returns the paths."""
        from farm.io import atomic_write_text, write_records

        folder = Path(folder)
        paths = {s: write_records(folder / f"{s}.json", recs) for s, recs in self.splits.items()}
        paths["baseline_outputs"] = write_records(folder / "baseline_outputs.json", self.baseline_outputs(self.eval))
        manifest = {"world": self.name, "version": VERSION, "seed": self.seed, "families": list(self.families),
                    "baseline_skill": self.baseline_skill,
                    "sizes": {s: len(r) for s, r in self.splits.items()}}
        atomic_write_text(folder / "world.json", json.dumps(manifest, indent=1) + "\n")
        paths["manifest"] = folder / "world.json"
        return paths


def _make_prompt(rng: np.random.Generator, families: Sequence[str]) -> dict:
    family = FAMILIES[families[int(rng.integers(len(families)))]]
    templates = list(family.templates)
    instruction = templates[int(rng.integers(len(templates)))]
    return {"family": family.name, "instruction": instruction,
            "input": family.make_input(rng, family.templates[instruction])}


def calibration_pairs(n: int = 4000, seed: int = 0, families: Sequence[str] | None = None) -> list[Pair]:
    """`n` pairs of outputs from the demonstration mix (two independent skills, never identical), on fresh
    prompts: the "world's pairs" the simulated judges are calibrated on. Needs no splits (fast)."""
    families = tuple(families or FAMILIES)
    rng = np.random.default_rng(stable_seed(seed, "calibration-pairs", *families))
    out: list[Pair] = []
    while len(out) < n:
        p = _make_prompt(rng, families)
        o1 = sample_output(p["instruction"], p["input"], rng, draw_skill(rng))
        o2 = sample_output(p["instruction"], p["input"], rng, draw_skill(rng))
        if o1 != o2:
            out.append(Pair(p["instruction"], o1, o2, input=p["input"], id=f"cal-{len(out):05d}"))
    return out


def build(seed: int = 0, families: Sequence[str] | None = None, baseline_skill: float = BASELINE_SKILL,
          **sizes: int) -> TaskWorld:
    """The world for `seed`. `sizes` overrides split sizes (sft, preference, unlabeled, eval); `baseline_skill`
    makes the fixed baseline policy stronger or weaker (P(correct answer), default BASELINE_SKILL).

    Each split draws from its own seeded stream, so changing one split's size leaves the others unchanged,
    and the eval split of seed 0 is the frozen `eval_sets/tasks_eval.json`. Prompts never repeat across
    splits (later splits skip earlier ones' prompts); within the training splits a prompt may repeat.
    """
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise FarmError(f"unknown split size {sorted(unknown)}", hint=f"known: {', '.join(DEFAULT_SIZES)}")
    families = tuple(families or FAMILIES)
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise FarmError(f"unknown task families {bad}", field="families", hint=f"known: {', '.join(FAMILIES)}")
    sizes = {**DEFAULT_SIZES, **sizes}
    splits: dict[str, list[dict]] = {}
    taken: set[tuple[str, str]] = set()
    for split in SPLITS:
        rng = np.random.default_rng(stable_seed(seed, split, *families))
        recs, tries, own = [], 0, set()
        while len(recs) < sizes[split]:
            tries += 1
            if tries > 50 * sizes[split] + 1000:
                raise FarmError(f"could not draw {sizes[split]} new prompts for split '{split}'",
                                hint="the families chosen have too few distinct prompts; ask for fewer")
            # the eval split is balanced over families (round robin), the others are drawn at random
            fams = families if split != "eval" else (families[len(recs) % len(families)],)
            p = _make_prompt(rng, fams)
            key = (p["instruction"], p["input"])
            if key in taken or (split == "eval" and key in own):
                continue
            own.add(key)
            p = {"id": f"{split}-{len(recs):05d}", **p}
            if split == "sft":
                p["output"] = sample_output(p["instruction"], p["input"], rng, draw_skill(rng))
            recs.append(p)
        splits[split] = recs
        taken |= {(r["instruction"], r["input"]) for r in recs}
    if not 0.0 <= baseline_skill <= 1.0:
        raise FarmError(f"baseline_skill must be in [0, 1], got {baseline_skill}", field="baseline_skill")
    return TaskWorld(seed=seed, splits=splits, families=families, baseline_skill=float(baseline_skill))
