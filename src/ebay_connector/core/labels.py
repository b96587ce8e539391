"""Names people give things (an account's label, an API key's name): what is accepted."""

from __future__ import annotations

import unicodedata

from ebay_connector.errors import InvalidLabel, UsageError

MAX_LABEL = 200
# Control and format characters hide text or break every page and log line that shows it.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


def has_hidden(text: str) -> bool:
    return any(unicodedata.category(c) in _HIDDEN for c in text)


def clean_name(typed: str, *, what: str, longest: int = MAX_LABEL) -> str:
    """``typed`` without surrounding blanks, 1 to ``longest`` characters, none hidden; else
    ``UsageError`` saying which rule, about ``what`` (e.g. "a label")."""
    name = typed.strip()
    if not name:
        raise UsageError(f"{what} cannot be empty")
    if len(name) > longest:
        raise UsageError(f"{what} has at most {longest} characters, not {len(name)}")
    if has_hidden(name):
        raise UsageError(f"{what} cannot contain control characters (tabs, line breaks, …)")
    return name


def clean_label(typed: str) -> str:
    """An account's new label (``InvalidLabel`` when refused)."""
    try:
        return clean_name(typed, what="a label")
    except UsageError as exc:
        raise InvalidLabel(exc.message) from None
