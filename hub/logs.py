"""How the hub's processes log: structlog, one line per record, JSON or readable.

Every process calls ``configure`` once at start. The hub's modules and the libraries log through
the standard ``logging`` module; structlog's formatter renders those records and its own alike:

1. ``ORDERHUB_LOG_JSON=true``: one JSON object per line (``timestamp`` in UTC ISO 8601, ``level``,
   ``logger``, ``event``, ``pid`` and every bound field), for log collectors.
2. Otherwise a readable line: ``[2026-12-03 13:07:56,080] [pid] [LEVEL] logger: message`` (local
   time, millisecond stamps, as the bench reads them) followed by the bound fields as ``key=value``.
3. Fields bound with ``bound(...)`` are on every line logged inside it (in the same task or
   thread; one context variable holds them all, so binding costs the engine's hot path next to
   nothing and the fields are only formatted when a line is written): the engine binds
   ``order_id``, ``order_number``, ``event_id`` and ``correlation_id`` while it decides a proposal;
   a connector's sink and the notifier bind ``order_id``, ``order_number`` and ``correlation_id``
   (and the connector, or the notification's id) while they handle one record.
4. A field whose name says it is a secret (password, secret, token, session id, authorization) is
   logged as ``***``; settings' secrets are ``SecretStr`` and print masked anyway.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import re
from typing import Any, Iterator

import structlog

from hub.settings import Settings

#: The readable line's beginning, as ``logging`` would format it (the bench parses the stamp).
FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_SECRET = re.compile(r"pass(word)?|secret|token|session_id|authori[sz]ation|api_key", re.IGNORECASE)


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Rule 4."""
    for key in event:
        if _SECRET.search(key):
            event[key] = "***"
    return event


def _pid(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("pid", os.getpid())
    return event


def _readable(_logger: Any, _name: str, event: dict[str, Any]) -> str:
    """Rule 2."""
    record: logging.LogRecord | None = event.pop("_record", None)
    event.pop("_from_structlog", None)
    created = record.created if record is not None else dt.datetime.now().timestamp()
    stamp = dt.datetime.fromtimestamp(created)
    level = (record.levelname if record is not None else str(event.get("level", "info")).upper())
    name = record.name if record is not None else event.get("logger", "")
    message = str(event.pop("event", ""))
    pid = event.pop("pid", os.getpid())
    exception = event.pop("exception", None)
    for key in ("level", "logger", "timestamp"):
        event.pop(key, None)
    fields = " ".join(f"{key}={value}" for key, value in event.items())
    line = f"[{stamp:%Y-%m-%d %H:%M:%S},{stamp.microsecond // 1000:03d}] [{pid}] [{level}] {name}: {message}"
    line = f"{line} {fields}" if fields else line
    return f"{line}\n{exception}" if exception else line


def configure(settings: Settings) -> None:
    """Every log record at or above the configured level to stderr, JSON or readable (rules 1-2)."""
    shared: list[Any] = [
        _merge_bound,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _pid,
        _redact,
    ]
    if settings.log_json:
        final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                            structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        final = [structlog.processors.format_exc_info, _readable]
    handler = logging.StreamHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)  # Python's warnings (a library's deprecations) as log lines too
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


#: Rule 3: the fields bound where the current task or thread is.
_BOUND: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("orderhub_log_fields", default={})


def _merge_bound(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in _BOUND.get().items():
        event.setdefault(key, value)
    return event


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Rule 3: ``fields`` on every line logged inside (None values left out; inner ones win)."""
    token = _BOUND.set(_BOUND.get() | {k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _BOUND.reset(token)
