"""Log lines: a stable event name plus fields; readable text, or one JSON object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ebay_connector import log, settings
from ebay_connector.core.exchange import Trigger
from ebay_connector.errors import ConfigError

pytestmark = pytest.mark.unit


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Capture]]:
    logger = logging.getLogger("ebay_connector.test_log")
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_json_line_carries_event_fields_level_logger_and_utc_time(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured
    when = datetime(2026, 11, 28, 12, 0, 3, tzinfo=UTC)
    log.event(
        logger,
        "refresh.finished",
        logging.WARNING,
        account_id=3,
        outcome="invalid_grant",
        trigger=Trigger.SCHEDULED,
        at=when,
        error=None,
    )
    line = log.JsonFormatter().format(handler.records[0])
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["event"] == "refresh.finished"
    assert doc["level"] == "warning"
    assert doc["logger"] == "ebay_connector.test_log"
    # None fields are left out, as in the text line; enums and datetimes become plain values.
    assert doc["fields"] == {
        "account_id": 3,
        "outcome": "invalid_grant",
        "trigger": "scheduled",
        "at": "2026-11-28T12:00:03+00:00",
    }
    assert doc["ts"].endswith("Z")
    assert datetime.fromisoformat(doc["ts"]).tzinfo is not None
    assert "message" not in doc


def test_text_line_stays_readable_with_event_first(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured
    log.event(logger, "worker.cycle", status="ok", due=0, error=None, note="two words")
    line = log.formatter(log.LogFormat.TEXT).format(handler.records[0])
    assert line.endswith(
        'INFO ebay_connector.test_log worker.cycle status=ok due=0 note="two words"'
    )


def test_plain_records_and_exceptions_are_json_too(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured
    logger.info("uvicorn says %s", "hello")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("refresh.observer_failed")
    plain, failed = (json.loads(log.JsonFormatter().format(r)) for r in handler.records)
    assert plain["event"] == log.PLAIN_EVENT
    assert plain["message"] == "uvicorn says hello"
    assert plain["fields"] == {}
    assert failed["level"] == "error"
    assert failed["exception"] == "RuntimeError: boom"
    assert "Traceback" in failed["traceback"]


def test_configure_replaces_handlers_and_writes_json_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    try:
        log.configure(log.LogFormat.JSON, logging.INFO)
        log.configure(log.LogFormat.JSON, logging.INFO)  # twice: still one handler
        assert len(root.handlers) == 1
        log.event(logging.getLogger("ebay_connector.x"), "demo.seeded", accounts=8)
        logging.getLogger("ebay_connector.x").debug("below the level")
        logging.getLogger("httpx").info("quieted")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = before[1]
        root.setLevel(before[0])
    lines = err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["fields"] == {"accounts": 8}


def test_log_format_names_are_the_public_ones() -> None:
    assert [f.value for f in log.LogFormat] == ["text", "json"]


def test_log_format_setting_accepts_only_text_or_json() -> None:
    assert settings.load(_env_file=None, log_format="json").log_format == "json"
    with pytest.raises(ConfigError, match="EBAY_CONNECTOR_LOG_FORMAT: must be text"):
        settings.load(_env_file=None, log_format="xml")
