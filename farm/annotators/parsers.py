"""Parsers: a judge's raw answer → one preference per pair, p = P(output_2 better) in [0, 1], or None.

Every prompt in annotator_prompts/ shows output_1 as "a" and output_2 as "b" (in `<output_a>` / `<output_b>`
blocks), so every parser maps a → 0.0, b → 1.0 and a tie → 0.5. A parser never guesses: an answer it cannot
read exactly is None, which the judge retries (bounded) and then records as invalid with the raw text.

A judge config names its parser; `PARSERS` maps names to functions `(completion, n_pairs) -> list[p | None]`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

LABELS = {"a": 0.0, "b": 1.0, "tie": 0.5}


@dataclass
class Completion:
    """What a backend returns for one prompt.

    `top_logprobs[i]` maps candidate tokens at generated position i to their log-probabilities (when the backend
    was asked for them); token counts are those the server reported (they drive cost accounting).
    """

    text: str
    top_logprobs: list[dict[str, float]] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    meta: dict = field(default_factory=dict)


def _label(token: str) -> str | None:
    """Normalise an answer token: 'b', ' B', '(b)', 'Output (b)', 'tie' → 'b' / 'tie'; anything else → None.

    >>> [_label(t) for t in ["a", " B", "(b)", "Output (a)", "**b**", "Tie.", "ab", "maybe"]]
    ['a', 'b', 'b', 'a', 'b', 'tie', None, None]
    """
    t = token.strip().strip("*`'\".:;!").strip().lower()
    t = re.sub(r"^output\s*", "", t).strip("() ")
    return t if t in LABELS else None


def parse_letter(text: str) -> float | None:
    """The whole answer is one label: "a", "b" or "tie" (case, quotes, brackets and a final dot tolerated).

    >>> [parse_letter(t) for t in ["a", " B\\n", "(b).", "tie", "a or b", "", "b because it is longer"]]
    [0.0, 1.0, 1.0, 0.5, None, None, None]
    """
    label = _label(text)
    return None if label is None else LABELS[label]


_OUTPUT_AB = re.compile(r"output\s*\(\s*([ab])\s*\)", re.I)


def parse_output_ab(text: str) -> float | None:
    """"Output (a)" or "Output (b)" on the last non-empty line, and only one of them there.

    >>> [parse_output_ab(t) for t in ["Output (a)", "output (B)", "Reasoning...\\nOutput (b)"]]
    [0.0, 1.0, 1.0]
    >>> [parse_output_ab(t) for t in ["Output (a) or Output (b)", "Output (c)", "b", "Output (a)\\nthanks"]]
    [None, None, None, None]
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    found = {m.lower() for m in _OUTPUT_AB.findall(lines[-1])}
    return LABELS[found.pop()] if len(found) == 1 else None


_VERDICT = re.compile(r"verdict\s*[:=]\s*[*`\"']*\s*(?:output\s*)?\(?\s*(a|b|tie)\b\s*\)?", re.I)


def parse_final_verdict(text: str) -> float | None:
    """Chain-of-thought answers: the last line that says "Verdict: a|b|tie" decides; reasoning above is ignored,
    even if it names the other output.

    >>> parse_final_verdict("(a) is shorter but (b) is correct.\\nVerdict: b")
    1.0
    >>> [parse_final_verdict(t) for t in ["Verdict: **A**", "verdict = tie", "Verdict: Output (a)"]]
    [0.0, 0.5, 0.0]
    >>> [parse_final_verdict(t) for t in ["I prefer b", "Verdict: c", "Verdict: both"]]
    [None, None, None]
    """
    for line in reversed(text.strip().splitlines()):
        m = _VERDICT.search(line)
        if m:
            return LABELS[m.group(1).lower()]
    return None


def _first_json_object(text: str) -> object | None:
    """The JSON value between the first '{' (or '[') and the matching last '}' (or ']'), fences stripped."""
    text = re.sub(r"```(?:json)?", "", text)
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            try:
                return json.loads(text[i: j + 1])
            except json.JSONDecodeError:
                continue
    return None


def parse_ranking_json(text: str) -> float | None:
    """A JSON ranking: {"ranking": [{"output": "a", "rank": 1}, {"output": "b", "rank": 2}]} (rank 1 = best;
    equal ranks = tie). AlpacaEval's list form [{"model": "m1", "rank": 2}, {"model": "m2", "rank": 1}] is read
    too (m1 = a, m2 = b).

    >>> parse_ranking_json('{"ranking": [{"output": "a", "rank": 2}, {"output": "b", "rank": 1}]}')
    1.0
    >>> parse_ranking_json('```json\\n[{"model": "m1", "rank": 1}, {"model": "m2", "rank": 2}]\\n```')
    0.0
    >>> parse_ranking_json('{"ranking": [{"output": "a", "rank": 1}, {"output": "b", "rank": 1}]}')
    0.5
    >>> [parse_ranking_json(t) for t in ['{"ranking": [{"output": "a", "rank": 1}]}', "a is best", "{bad"]]
    [None, None, None]
    """
    data = _first_json_object(text)
    items = data.get("ranking") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return None
    ranks: dict[str, float] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        who = str(item.get("output", item.get("model", ""))).strip().lower()
        who = {"m1": "a", "m2": "b", "1": "a", "2": "b"}.get(who, who)
        rank = item.get("rank")
        if who not in ("a", "b") or who in ranks or isinstance(rank, bool) or not isinstance(rank, (int, float)):
            return None
        ranks[who] = float(rank)
    if set(ranks) != {"a", "b"}:
        return None
    if ranks["a"] == ranks["b"]:
        return 0.5
    return 1.0 if ranks["b"] < ranks["a"] else 0.0


def prob_from_top_logprobs(top_logprobs: list[dict[str, float]] | None) -> float | None:
    """Continuous preference from the first generated position whose candidates include a or b:
    p = P(b) / (P(a) + P(b)), summing the probability of every spelling of each label (' a', 'A', '(a)'...).
    A label absent from the top candidates counts as probability 0.

    >>> round(prob_from_top_logprobs([{"b": math.log(.6), "a": math.log(.2), "c": math.log(.2)}]), 6)
    0.75
    >>> round(prob_from_top_logprobs([{"**": 0.0}, {" B": math.log(.3), "b": math.log(.3), "A": math.log(.2)}]), 6)
    0.75
    >>> prob_from_top_logprobs([{"b": -0.1}]), prob_from_top_logprobs([{"x": -0.1}]), prob_from_top_logprobs(None)
    (1.0, None, None)
    """
    for position in top_logprobs or []:
        mass = {"a": 0.0, "b": 0.0}
        for token, logprob in position.items():
            label = _label(token)
            if label in mass and logprob is not None and math.isfinite(logprob):
                mass[label] += math.exp(logprob)
        total = mass["a"] + mass["b"]
        if total > 0:
            return mass["b"] / total
    return None


def parse_logprob_ab(completion: Completion) -> float | None:
    """Logprob-weighted judges: the continuous preference from `top_logprobs`; when the server returned no
    logprobs at all (some OpenAI-compatible servers ignore the option) the answer text is read as one label,
    never guessed.

    >>> parse_logprob_ab(Completion("b", [{"a": math.log(.25), "b": math.log(.75)}]))
    0.75
    >>> parse_logprob_ab(Completion("b")), parse_logprob_ab(Completion("no idea"))
    (1.0, None)
    """
    if completion.top_logprobs:
        return prob_from_top_logprobs(completion.top_logprobs)
    return parse_letter(completion.text)


_BATCH_LINE = re.compile(r"^\s*(?:pair\s*)?#?(\d+)\s*[:.)\-=]\s*[*`\"']*\s*(?:output\s*)?\(?\s*(a|b|tie)\b", re.I)


def parse_batched(text: str, n: int) -> list[float | None]:
    """Multi-pair answers, one line per pair: "1: a", "2: b", "3: tie". A missing index, or an index given
    twice with different labels, is None for that pair only.

    >>> parse_batched("1: a\\n2: B\\n3) tie", 3)
    [0.0, 1.0, 0.5]
    >>> parse_batched("Here you go:\\n2: b\\n1: a\\n1: b\\n4: a", 3)
    [None, 1.0, None]
    """
    found: dict[int, float | None] = {}
    for line in text.splitlines():
        m = _BATCH_LINE.match(line)
        if not m:
            continue
        i, value = int(m.group(1)), LABELS[m.group(2).lower()]
        found[i] = value if found.get(i, value) == value else None
    return [found.get(i) for i in range(1, n + 1)]


def _single(fn: Callable[[str], float | None], reads: str = "text") -> Callable[[Completion, int], list]:
    """Adapt a one-pair parser of the answer text (or of the whole Completion) to the registry's signature."""

    def parse(completion: Completion, n: int) -> list[float | None]:
        if n != 1:
            raise ValueError(f"parser {fn.__name__} reads one pair per answer; use 'batched' for {n}")
        return [fn(completion.text if reads == "text" else completion)]

    parse.__name__ = fn.__name__
    return parse


PARSERS: dict[str, Callable[[Completion, int], list[float | None]]] = {
    "letter": _single(parse_letter),
    "output_ab": _single(parse_output_ab),
    "final_verdict": _single(parse_final_verdict),
    "ranking_json": _single(parse_ranking_json),
    "logprob_ab": _single(parse_logprob_ab, reads="completion"),
    "batched": lambda c, n: parse_batched(c.text, n),
}
