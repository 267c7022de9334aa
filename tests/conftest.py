"""Shared fixtures: fresh databases per test on every configured backend, and the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from directory.trust import Directory
from storage.crypto import MasterKeyring
from storage.db import open_database
from storage.keystore import KeyStore, MasterKeySource
from storage.messages import MessageStore
from storage.notify import ChangeHub
from tests.databases import DatabasePair, Provisioner, backends


@pytest.fixture(scope="session")
def provisioner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioner]:
    provisioner = Provisioner(tmp_path_factory.mktemp("databases"))
    yield provisioner
    asyncio.run(provisioner.cleanup())


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def databases(provisioner: Provisioner, backend: str) -> AsyncIterator[DatabasePair]:
    pair = await provisioner.fresh(backend)
    yield pair
    await provisioner.release(pair)


@pytest.fixture
def master_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "master.key"
    MasterKeyring.generate().save(path)
    return path


@pytest.fixture
async def store(databases: DatabasePair, master_key_file: Path) -> AsyncIterator[MessageStore]:
    messages = open_database(databases.messages_url)
    keys = open_database(databases.keystore_url)
    hub = ChangeHub(messages)
    await hub.start()
    keystore = KeyStore(keys, MasterKeySource(master_key_file), cache_seconds=0)
    try:
        yield MessageStore(messages, keystore, hub)
    finally:
        await hub.stop()
        await messages.dispose()
        await keys.dispose()


OPERATOR_DOMAIN = "hygie.test"


@pytest.fixture
def directory(store: MessageStore) -> Directory:
    """The trust space of operator `hygie.test`, on the same fresh database as `store`."""
    return Directory(store.database, store, OPERATOR_DOMAIN)
