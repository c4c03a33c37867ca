"""JSON logs: one object per line, carrying the current request id.

``configure_logging(level)`` installs the formatter on the root logger; ``serve_app`` calls it, ``create_app``
does not (importing or building an app leaves global logging alone). The request id of the request being
handled lives in a context variable set by :mod:`service.core.middleware`, so every log line written while
serving it carries the id. Extra fields: pass ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

__all__ = ["JsonFormatter", "configure_logging", "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("sae_router_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """Root logger → one JSON line per record on stderr; uvicorn's own loggers go through it too."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("sae_router").setLevel(level)
    for name in ("httpx", "httpcore"):  # one line per upstream call is noise next to our per-request line
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
