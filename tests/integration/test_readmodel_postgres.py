"""The read model and lead-time contracts on a real PostgreSQL, and the local server's lifecycle.

Set ``ORDERHUB_TEST_POSTGRES_URL`` (``postgresql+psycopg://user@host:port/db``) to use an
existing, disposable database; otherwise the session starts one with ``localdev.postgres``.
The migrations' own tests (both backends) are in ``test_migrations.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from localdev import postgres as localpg
from hub.readmodel import ReadModel, metadata
from hub.settings import Settings
from tests.factories import make_change
from localdev import process
from tests.services import free_port, local_state_dir
from tests.unit.test_lead_times import LeadTimesContract
from tests.unit.test_readmodel import ReadModelContract

pytestmark = pytest.mark.integration


class TestPostgresReadModel(ReadModelContract):
    """The contract on PostgreSQL, each test on freshly created tables."""

    @pytest.fixture
    def readmodel(self, postgres_url: str) -> Iterator[ReadModel]:
        model = ReadModel(postgres_url)
        metadata.drop_all(model.engine)
        model.create_schema()
        yield model
        model.close()


class TestPostgresLeadTimes(LeadTimesContract):
    """The lead-time contract on PostgreSQL, each test on freshly created tables."""

    @pytest.fixture
    def readmodel(self, postgres_url: str) -> Iterator[ReadModel]:
        model = ReadModel(postgres_url)
        metadata.drop_all(model.engine)
        model.create_schema()
        yield model
        model.close()


def test_local_server_lifecycle() -> None:
    """up() is idempotent and serves the orderhub database, and down() leaves no server process."""
    localpg.bindir()  # fails, saying how to install PostgreSQL, when it is missing: never skipped
    settings = Settings(state_dir=local_state_dir())
    try:
        url = localpg.up(settings, port=free_port())
        pid = localpg.status(settings).pid
        assert localpg.up(settings) == url and localpg.status(settings).pid == pid
        model = ReadModel(url)
        model.create_schema()
        model.project_changes([make_change("O-1", 1)])
        assert model.versions("O-1") == [1]
        model.close()
        assert localpg.down(settings) == [pid]
        assert not process.alive(pid) and not localpg.status(settings).running
        assert localpg.down(settings) == []
    finally:
        localpg.down(settings)
        shutil.rmtree(settings.state_dir, ignore_errors=True)
