"""What an account's rename accepts."""

from __future__ import annotations

import pytest

from ebay_connector.core.labels import MAX_LABEL, clean_label
from ebay_connector.errors import InvalidLabel

pytestmark = pytest.mark.unit


def test_a_label_is_trimmed_and_kept_as_typed_otherwise() -> None:
    assert clean_label("  Main store  ") == "Main store"
    assert clean_label("Bücher & Co. · Ünïcode ✓") == "Bücher & Co. · Ünïcode ✓"
    assert clean_label("x" * MAX_LABEL) == "x" * MAX_LABEL


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "cannot be empty"),
        ("   \t ", "cannot be empty"),
        ("x" * (MAX_LABEL + 1), "at most 200 characters, not 201"),
        ("two\nlines", "control characters"),
        ("tab\there", "control characters"),
        ("bell\x07", "control characters"),
        ("hidden\u202eright-to-left", "control characters"),
        ("nul\x00", "control characters"),
    ],
)
def test_a_bad_label_is_refused_with_a_reason(typed: str, says: str) -> None:
    with pytest.raises(InvalidLabel, match=says) as refused:
        clean_label(typed)
    assert refused.value.code == "invalid_label"
