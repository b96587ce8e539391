"""Structured log lines: a stable event name plus fields, never a secret.

    log.event(logger, "refresh.finished", account_id=3, outcome="ok")
    -> "refresh.finished account_id=3 outcome=ok"

Tests assert on the event names and fields, not on prose.
"""

from __future__ import annotations

import json
import logging
from typing import Any


def _value(value: Any) -> str:
    text = str(value)
    if text == "" or any(ch.isspace() or ch in '"=' for ch in text):
        return json.dumps(text)
    return text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event; the record also carries ``event`` and ``fields`` for JSON formatters."""
    if not logger.isEnabledFor(level):
        return
    parts = [name, *(f"{key}={_value(val)}" for key, val in fields.items() if val is not None)]
    logger.log(level, " ".join(parts), extra={"event": name, "fields": fields})
