"""The return-URL allow-list: exact origin, path prefix on whole segments, nothing ambiguous."""

from __future__ import annotations

import pytest

from ebay_connector.core import return_urls

pytestmark = pytest.mark.unit

ALLOWED = ["https://app.example/ebay", "http://localhost:3000/"]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://app.example/ebay", True),
        ("https://app.example/ebay/done?x=1", True),
        ("https://APP.example:443/ebay/done", True),
        ("http://localhost:3000/anything", True),
        ("https://app.example/ebayx", False),
        ("https://app.example/", False),
        ("http://app.example/ebay", False),
        ("https://app.example:8443/ebay", False),
        ("https://sub.app.example/ebay", False),
        ("https://app.example/ebay/%2e%2e/admin", False),
        ("https://user@app.example/ebay", False),
        ("https://app.example\\@evil.example/ebay", False),
        ("https://app.example/ebay\n", False),
        ("ftp://app.example/ebay", False),
    ],
)
def test_allowed(url: str, ok: bool) -> None:
    assert return_urls.allowed(url, ALLOWED) is ok


def test_entries_are_normalized_and_refused_with_a_reason() -> None:
    assert return_urls.normalize_entry("HTTPS://App.Example:443/ebay") == "https://app.example/ebay"
    assert return_urls.normalize_entry("http://localhost:3000") == "http://localhost:3000/"
    with pytest.raises(ValueError, match="without"):
        return_urls.normalize_entry("https://app.example/ebay?x=1")


def test_the_outcome_keeps_the_programs_own_query() -> None:
    url = return_urls.with_outcome("https://app.example/ebay?ref=7#top", {"status": "connected"})
    assert url == "https://app.example/ebay?ref=7&status=connected#top"
