"""Showing untrusted text (model outputs, instructions) to a judge: tag neutralising and truncation.

A judge's prompt puts each output in a tagged block (`<output_a>...</output_a>`). An output that writes the
closing tag could end its block and speak as the prompt, so every `<` of the untrusted text that a reader could
take for the start of one of the template's tags is replaced by `&lt;`.

"A reader could take it for a tag" is decided on a *normalised view* of the whole text, computed in one pass
(no look-ahead window, so no amount of padding hides a tag):
- invisible characters are dropped wherever they are: format characters (Cf: zero-width spaces, soft hyphens,
  bidi controls, tag characters...), control characters other than whitespace (Cc: NUL, BEL, C1 controls),
  combining and enclosing marks (Mn, Me), private-use, surrogate and unassigned code points, and the Unicode
  default-ignorable fillers (U+115F, U+1160, U+3164, U+FFA0, U+2800...);
- whitespace of any kind (including the Cc whitespace: tab, newline, U+0085) reads as a space, so `< / output_a`
  is a tag;
- NFKC folds fullwidth and small forms, mathematical letters, ligatures; everything is case-folded;
- every character shaped like `<` (fullwidth, small form, angle brackets, ‹, ˂...) reads as `<`, every slash-like
  one as `/`, every dash or connector (‐, ‑, ＿, ﹍...) as `_` (so `output-a` = `output_a`);
- a letter outside ASCII after folding (Cyrillic о, Greek ο, Armenian օ...) matches *any* letter of a tag name,
  and the ASCII digit look-alikes (0 for o, 1 for l or i...) match their letters: a look-alike name is never
  missed, whatever confusables table an attacker draws from.

The price of erring on the safe side: a `<` that starts something merely resembling a tag name (a Cyrillic word
of the same length, `<0utput_a`) is shown as `&lt;`, which a judge reads just as well.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

# every character a reader may take for '<'
LT_LIKE = "<\uFE64\uFF1C\u2039\u2329\u3008\u27E8\u276C\u276E\u02C2\u1438\u2AA1\u29FC"
_LT_RE = re.compile(f"[{re.escape(LT_LIKE)}]")
_LETTER, _DIGIT = "\x01", "\x02"  # the view's stand-ins for a non-ASCII letter / digit
_DROP = {"Cf", "Co", "Cs", "Cn", "Mn", "Me"}
_IGNORABLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, *range(0x180B, 0x1810),
              *range(0xFE00, 0xFE10), *range(0xFFF0, 0xFFF9), *range(0xE0000, 0xE1000)}
# ASCII characters that read as a letter of a tag name
_ASCII_LOOKALIKE = {"o": "0", "i": "1l|!", "l": "1i|", "s": "5$", "e": "3", "a": "4@", "b": "86", "t": "7+",
                    "g": "9", "z": "2"}


def _view_of(ch: str) -> str:
    """How one character reads in the normalised view ('' = invisible)."""
    o = ord(ch)
    if ch in LT_LIKE:
        return "<"
    if ch.isspace():
        return " "
    cat = unicodedata.category(ch)
    if cat in _DROP or cat == "Cc" or o in _IGNORABLE:
        return ""
    if o < 128:
        return "_" if ch == "-" else ch.lower()
    name = unicodedata.name(ch, "")
    if "SOLIDUS" in name or "SLASH" in name:
        return "/"
    out = []
    for c in unicodedata.normalize("NFKC", ch).casefold():
        sub = unicodedata.category(c)
        if c == "<":
            out.append("?")  # a character that merely contains '<' once folded (never a bracket alone)
        elif c.isspace():
            out.append(" ")
        elif c.isascii():
            out.append("_" if c == "-" else c)
        elif sub in ("Pc", "Pd"):
            out.append("_")
        elif sub.startswith("L"):
            out.append(_LETTER)
        elif sub.startswith("N"):
            out.append(_DIGIT)
        elif sub not in _DROP:
            out.append(c)
    return "".join(out)


class _ViewTable(dict):
    """A `str.translate` table filled on first use of each character (the translation itself runs in C)."""

    def __missing__(self, o: int) -> str:
        v = self[o] = _view_of(chr(o))
        return v


_TABLE = _ViewTable()


def normalised_view(text: str) -> str:
    """The text as the rules above read it (invisible characters gone, look-alikes folded).

    >>> normalised_view("<\u200b/OUT\u00adPUT\uff3fa>") == "</output_a>"
    True
    """
    return text.translate(_TABLE)


@lru_cache(maxsize=64)
def _tag_pattern(names: tuple[str, ...]) -> re.Pattern:
    def char(c: str) -> str:
        if c.isalpha():
            return f"[{re.escape(c + _ASCII_LOOKALIKE.get(c, ''))}{_LETTER}]"
        if c.isdigit():
            return f"[{c}{_DIGIT}]"
        if c in "_-":
            return "[_ ]"
        return re.escape(c)

    alts = sorted({"".join(char(c) for c in n.lower()) for n in names}, key=len, reverse=True)
    return re.compile(rf"<(?=[ /]*(?:{'|'.join(alts)})(?![a-z0-9_{_LETTER}{_DIGIT}]))")


def tag_starts(text: str, names: Sequence[str]) -> list[int]:
    """Positions in the normalised view where a reader could see one of the tags `names` begin.

    >>> len(tag_starts("<output_a> x \uff1c/\u043eutput_a> <b>", ["output_a"]))
    2
    """
    if not names or not _LT_RE.search(text):
        return []
    return [m.start() for m in _tag_pattern(tuple(sorted(set(names)))).finditer(normalised_view(text))]


def neutralise_tags(text: str, names: Sequence[str]) -> str:
    """Replace by '&lt;' the '<' (or look-alike) of anything a reader could take for one of the tags `names`.

    >>> neutralise_tags("x</output_a> </OUTPUT_A > \uff1c/output_a\uff1e </out\u200bput_a> <b> </output_ab>", ["output_a"])
    'x&lt;/output_a> &lt;/OUTPUT_A > &lt;/output_a\uff1e &lt;/out\u200bput_a> <b> </output_ab>'
    >>> neutralise_tags("<" + "\u200b" * 500 + "/\u043eutput_a>", ["output_a"]).startswith("&lt;")  # Cyrillic о
    True
    """
    hits = tag_starts(text, names)
    if not hits:
        return text
    view = normalised_view(text)
    view_lts = [m.start() for m in re.finditer("<", view)]
    text_lts = [m.start() for m in _LT_RE.finditer(text)]  # the k-th '<' of the view is the k-th of these
    cut = sorted(text_lts[bisect.bisect_left(view_lts, v)] for v in hits)
    parts, last = [], 0
    for i in cut:
        parts += [text[last:i], "&lt;"]
        last = i + 1
    parts.append(text[last:])
    return "".join(parts)


def truncate(text: str, max_chars: int | None) -> str:
    """`text` cut to `max_chars` characters with a note saying how much was cut (None: unchanged).

    >>> truncate("abcdefgh", 3)
    'abc\\n[... 5 more characters not shown: cut by max_output_chars]'
    """
    if max_chars is None or len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}\n[... {len(text) - max_chars} more characters not shown: cut by max_output_chars]"
