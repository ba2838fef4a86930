from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.service.pg import fresh_database, throwaway_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    url = os.environ.get("PHITUNE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    with throwaway_postgres() as url:
        yield url


@pytest.fixture()
def postgres_url(postgres_server: str) -> str:
    return fresh_database(postgres_server)
