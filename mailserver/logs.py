"""Logging set-up. Logs say who, when and what; never message content or secrets."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str, file: Path | None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    stream = logging.StreamHandler()
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not file.exists():
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT, 0o600))
        handler = logging.handlers.WatchedFileHandler(file, encoding="utf-8")
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    # aiosmtpd's "mail.log" logs command lines (AUTH included) at INFO: never below WARNING.
    for noisy in ("uvicorn.access", "aiosqlite", "asyncio", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
