"""How the hub's processes log: one format, the level from settings (``ORDERHUB_LOG_LEVEL``).

The worker and ``orderhub connectors run`` call ``configure`` once at start; libraries log
through the standard ``logging`` module and land here.
"""

from __future__ import annotations

import logging

from hub.settings import Settings

#: ``[2026-12-03 13:07:56,080] [pid] [LEVEL] logger: message``: millisecond stamps, as the bench reads them.
FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure(settings: Settings) -> None:
    """Send every log record at or above the configured level to stderr, in ``FORMAT``."""
    logging.basicConfig(level=settings.log_level.upper(), format=FORMAT)
