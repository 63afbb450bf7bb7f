"""``python -m hub.migrations <alembic command>``: alembic's command line for the read model.

For writing and inspecting revisions (``revision -m "..." [--autogenerate]``, ``history``,
``current``); the hub itself upgrades through ``hub.migrations.upgrade``. The database is
``ORDERHUB_DATABASE_URL``, or the default SQLite file in the state folder.
"""

from __future__ import annotations

import sys

from alembic.config import CommandLine

from hub.migrations import alembic_config
from hub.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    """Run one alembic command on the read model's scripts and database."""
    cli = CommandLine(prog="python -m hub.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("name a command, e.g. revision, history, current")
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", get_settings().read_model_url.replace("%", "%%"))
    cli.run_cmd(config, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
