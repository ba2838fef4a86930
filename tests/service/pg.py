"""A throwaway PostgreSQL server for tests, started from the Debian ``postgresql`` binaries.

``PHITUNE_TEST_POSTGRES_URL`` (an SQLAlchemy URL of a database the tests may fill) wins;
otherwise ``initdb`` + ``pg_ctl`` create a cluster in a temporary directory, listening on a
free loopback port with trust auth, run as the ``postgres`` user when the tests run as root
(PostgreSQL refuses to run as root). Tests skip only when no PostgreSQL binaries exist.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def pg_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh server's ``postgres`` database; stop it after."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found: apt-get install -y postgresql "
                    "(or set PHITUNE_TEST_POSTGRES_URL)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="phitune-pg-"))
    data, port = root / "data", _free_port()
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    try:
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                        str(root / "pg.log"), "-o",
                        f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off",
                        "start"], check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL (tests stay independent)."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 30
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
