"""Structured log lines: a stable event name plus fields, never a secret.

    log.event(logger, "refresh.finished", account_id=3, outcome="ok")
    -> text: "2026-11-28 12:00:03,104 INFO ebay_connector.service.refresh refresh.finished …"
    -> json: {"ts": "2026-11-28T12:00:03.104Z", "level": "info", "event": "refresh.finished",
              "fields": {"account_id": 3, "outcome": "ok"},
              "logger": "ebay_connector.service.refresh"}

Callers mask their fields (``ebay_connector.core.masking``) before logging; the formatters only
render them. Tests assert on the event names and fields, not on prose.
"""

from __future__ import annotations

import enum
import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# A record logged without log.event (a library, logger.exception) gets this event name.
PLAIN_EVENT = "log"
# Loggers chatty at INFO whose lines add nothing an operator needs.
QUIET_LOGGERS = ("httpx",)


class LogFormat(enum.StrEnum):
    TEXT = "text"  # readable: time, level, logger, event and key=value fields
    JSON = "json"  # one JSON object per line, for log shippers


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


def _jsonable(value: Any) -> Any:
    """Fields are ids, counts, codes and masked values; anything else is shown as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``event``, ``fields``, ``logger``.

    A record not made by :func:`event` has the event ``log`` and its text under ``message``;
    an exception adds ``exception`` (type and message) and ``traceback``.
    """

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "event", None)
        fields = getattr(record, "fields", None)
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": name if isinstance(name, str) else PLAIN_EVENT,
            "fields": (
                {k: v for k, v in fields.items() if v is not None}
                if isinstance(fields, dict)
                else {}
            ),
            "logger": record.name,
        }
        if not isinstance(name, str):
            doc["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exception"] = f"{type(exc).__name__}: {exc}"
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=_jsonable)


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)


def configure(fmt: LogFormat, level: int = logging.INFO) -> None:
    """Send every log record to stderr in ``fmt``, replacing any handler set up before."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
