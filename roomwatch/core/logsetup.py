"""Logging to stderr (journald adds its own timestamps) with secrets redacted."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TextIO

__all__ = ["RedactFilter", "setup_logging"]


class RedactFilter(logging.Filter):
    """Replace every configured secret in a log line with ``***``: a token never reaches a log."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        redacted = msg
        for secret in self.secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != msg:
            record.msg, record.args = redacted, None
        return True


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` adds (found again by its ``_roomwatch`` mark on later calls)."""

    _roomwatch = True


def setup_logging(level: str = "info", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once; later calls change level and secrets."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_roomwatch", False)), None)
    if handler is None:
        handler = _Handler(sys.stderr)
        # Under systemd, journald stamps each line; elsewhere we do.
        fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    for f in list(handler.filters):
        handler.removeFilter(f)
    handler.addFilter(RedactFilter(secrets))
    root.setLevel(level.upper())
