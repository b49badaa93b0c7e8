"""One error type for everything a user can cause: it says what, where (file, line, field) and how to fix it."""

from __future__ import annotations


class FarmError(ValueError):
    """A user-fixable problem: bad file, missing field, unknown key or judge.

    >>> print(FarmError("missing field", file="a.jsonl", line=3, field="output_1"))
    a.jsonl:3: field 'output_1': missing field
    """

    def __init__(
        self, message: str, *, file: object = None, line: int | None = None, field: str | None = None,
        hint: str | None = None,
    ):
        self.message = message
        self.file, self.line, self.field, self.hint = (str(file) if file is not None else None), line, field, hint
        where = ""
        if self.file is not None:
            where = self.file + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f"field '{field}': "
        text = where + message
        if hint:
            text += f" ({hint})"
        super().__init__(text)

    def at(self, file: object, line: int | None) -> FarmError:
        """The same error, placed in `file` at `line` (e.g. the user's YAML rather than a derived copy)."""
        return type(self)(self.message, file=file, line=line, field=self.field, hint=self.hint)
