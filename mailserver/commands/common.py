"""What every `hygie` command shares: the data-directory option, errors, a runtime."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mailserver.config import ConfigError, Settings, load_settings
from mailserver.service import Runtime
from storage import migrate
from storage.crypto import MasterKeyError
from storage.messages import StoreError

T = TypeVar("T")
MIN_PASSWORD_LENGTH = 12
F = TypeVar("F", bound=Callable[..., Any])

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    envvar="HYGIE_DATA_DIR",
    show_default=True,
    help="The node's data directory (configuration, keys, certificates, SQLite files).",
)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"hygie: error: {message}", err=True)
    sys.exit(code)


def settings_for(data_dir: Path) -> Settings:
    try:
        return load_settings(data_dir)
    except ConfigError as exc:
        fail(str(exc), 2)


def with_runtime(settings: Settings, work: Callable[[Runtime], Coroutine[Any, Any, T]]) -> T:
    """Run one administrative task against the node's databases, then close them."""

    async def run() -> T:
        await migrate.check_current("messages", settings.database_url)
        await migrate.check_current("keystore", settings.keystore_url)
        runtime = Runtime.open(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(run())
    except (migrate.SchemaError, MasterKeyError, StoreError) as exc:
        fail(str(exc))
