"""What a person reads for each kind of error: a title, plain words and a next step."""

from __future__ import annotations

import pytest

from ebay_connector.web.api.errors import ErrorAnswer
from ebay_connector.web.ui.error_pages import explain

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("status", "code", "title", "step"),
    [
        (401, "unauthorized", "Your session has ended", "/login"),
        (403, "csrf_failed", "This form could not be accepted", "/"),
        (403, "forbidden", "You may not do this", "/"),
        (404, "not_found", "Page not found", "/"),
        (404, "exchange_not_found", "Page not found", "/"),
        (405, "method_not_allowed", "This address cannot be used that way", "/"),
        (409, "webhook_exists", "This cannot be done now", "/"),
        (422, "validation_error", "Some of what was sent cannot be used", "/"),
        (429, "rate_limited", "Too many requests", "/"),
        (400, "invalid_state", "This request cannot be done", "/"),
        (500, "internal_error", "Something went wrong on our side", "/"),
        (503, "store_unavailable", "Something went wrong on our side", "/"),
    ],
)
def test_each_error_has_a_title_and_a_next_step(
    status: int, code: str, title: str, step: str
) -> None:
    explained = explain(ErrorAnswer(status, code, "whatever the server said"))
    assert explained.title == title
    assert explained.what.endswith(".")
    assert explained.steps and explained.steps[0].href == step
