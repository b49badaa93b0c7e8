"""No hand-typed measured figure in README.md, docs/ and bench/RESULTS.md.

A measured figure (a win rate, an agreement, a time, a speed-up, an accuracy) is written by the command that
measured it, into a generated block (farm/docblocks.py; tests/test_docblocks.py re-renders every block). A figure
that no command reproduces lives in a section whose heading says "Measurement log" and names the commit and the
command it came from. Everywhere else, prose states no figure: this test scans the prose for what looks like one
(a ±, a percentage, a decimal ratio, a number with two or more decimals, a "before → after") and fails on each,
naming file and line. Code blocks and `inline code` are not prose (config values and commands live there).

The allow-list holds the few published figures the prose quotes, each with its source: a figure of a paper or a
public leaderboard is not ours to measure. Definitions (0.5 = a tie, a 95% interval) are matched by NEUTRAL.
"""

from __future__ import annotations

import re
from pathlib import Path

from farm import docblocks

ROOT = docblocks.ROOT

FIGURE = re.compile(r"""
      ±                                          # an uncertainty
    | (?<![\w.])\d[\d,]*(?:\.\d+)?\s?%           # a percentage
    | (?<![\w.])\d+\.\d+\s?×                     # a decimal ratio (2.36×)
    | (?<![\w.\-])\d+\.\d{2,}(?![\w.])            # two or more decimals (0.636, 65.66)
    | (?<![\w.])[−-]?\d[\d,.]*\s*→\s*[−+-]?\d     # before → after
""", re.X)

# Not measurements although they look like one: versions, confidence levels, the preference scale's definitions.
NEUTRAL = re.compile(r"""
      \b(?:torch|transformers|TRL|trl|accelerate|alpaca-eval|alpaca_eval|vLLM|vllm|openai|peft|Python)
        \s?(?:≥\s?)?\d+(?:\.\d+)+                # a package version
    | (?<![\d.])95\s?%\s(?:(?:percentile|BCa|bootstrap)\s)*(?:interval|CI|confidence)   # a confidence level
    | (?<![\d.])80\s?%\spower                   # the power level of a minimum detectable effect
""", re.X)

# (the exact text quoted, where the figure is published); a quote is allowed in every document
ALLOWED: tuple[tuple[str, str], ...] = (
    ("25% label flip", "AlpacaFarm (Dubois et al. 2023, §3.2): the simulated training pool flips 25% of labels"),
    ("AlpacaFarm reports 65% agreement", "AlpacaFarm (Dubois et al. 2023), Table 1: p_sim^eval agrees 65% with "
                                         "the human majority"),
)

# documents another task is rewriting now: skipped until it lands (then delete the entry)
PENDING: dict[str, str] = {
    "docs/annotators.md": "task E rewrites it (simulated judges as folders); its figures are in task G's report",
}

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK_TARGET = re.compile(r"\]\([^)]*\)|https?://\S+|<!--.*?-->")


def prose_lines(text: str):
    """(line number, text) of every line of prose: outside fenced code, generated blocks and "Measurement log"
    sections, with inline code, link targets and URLs blanked out."""
    in_fence, in_block, log_level, in_span = False, None, 0, False
    for no, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if in_block is None and (m := re.match(r"<!-- farm:begin ([\w.-]+) ", line)):
            in_block = m[1]
            continue
        if in_block is not None:
            if line.strip() == f"<!-- farm:end {in_block} -->":
                in_block = None
            continue
        if h := _HEADING.match(line):
            level = len(h[1])
            if log_level and level <= log_level:
                log_level = 0
            if "measurement log" in h[2].lower():
                log_level = level
                continue
        if log_level:
            continue
        if in_span:  # an inline code span that began on an earlier line
            if "`" not in line:
                continue
            line, in_span = line[line.index("`") + 1:], False
        line = _CODE_SPAN.sub(" ", line)
        if "`" in line:  # opens a span that goes on past the line's end
            line, in_span = line[:line.index("`")], True
        yield no, _LINK_TARGET.sub(" ", line)


def figures(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: figure | line' for every measured-looking figure in the prose of one document."""
    rel = path.relative_to(root).as_posix()
    out = []
    for no, line in prose_lines(path.read_text(encoding="utf-8")):
        for q, _ in ALLOWED:
            line = line.replace(q, " ")
        line = NEUTRAL.sub(" ", line)
        for m in FIGURE.finditer(line):
            out.append(f"{rel}:{no}: {m[0].strip()!r} | {line.strip()[:110]}")
    return out


def test_no_measured_figure_outside_generated_blocks_and_measurement_logs():
    found = [f for doc in docblocks.documents() if doc.relative_to(ROOT).as_posix() not in PENDING
             for f in figures(doc)]
    assert not found, ("measured-looking figures in prose (write them with a command into a generated block, or "
                       "move them into a 'Measurement log' section naming commit and command):\n"
                       + "\n".join(found))


def test_every_allowed_quote_is_still_quoted_and_names_a_source():
    text = "\n".join(doc.read_text(encoding="utf-8") for doc in docblocks.documents())
    for quote, source in ALLOWED:
        assert source.strip(), quote
        assert quote in text, f"no document quotes {quote!r} any more: drop its entry"
    for doc in PENDING:
        assert (ROOT / doc).exists(), f"{doc} is gone: drop its PENDING entry"


def test_the_scanner_sees_figures_in_prose_and_not_in_code_blocks_or_logs(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("\n".join([
        "# t", "win rate 12.8 ± 2.1 here", "a speed-up of 2.36× there", "agreement 65%", "quality 0.636",
        "gold 37.0 → 21.5", "β = 0.1 and lr `1e-3` and `agreement 65.7%`", "torch 2.13.0 and a 95% interval",
        "```", "0.636 ± 1", "```",
        "<!-- farm:begin b from=x.json render=m:f -->", "| 12.5% |", "<!-- farm:end b -->",
        "## Measurement log (not re-run; commit abc, `cmd`)", "| 0.31 ± 0.2 |", "### a sub-heading", "2.5%",
        "## Next", "back to prose 0.75", "a `multi-line", "code 0.99` span 1.25", "AlpacaFarm's 25% label flips",
    ]))
    got = [f.split(": ", 1)[1].split(" | ")[0] for f in figures(doc, tmp_path)]
    assert got == ["'±'", "'2.36×'", "'65%'", "'0.636'", "'37.0 → 2'", "'0.75'", "'1.25'"]
