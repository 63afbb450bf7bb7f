"""Settings are validated when built."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hub.settings import Settings


def test_unknown_log_level_is_refused_when_settings_are_built() -> None:
    """A misspelt level fails at start-up, naming the variable, instead of inside the stream runtime."""
    with pytest.raises(ValidationError, match="ORDERHUB_LOG_LEVEL"):
        Settings(log_level="loud")


def test_environment_points_the_hub_at_any_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORDERHUB_BOOTSTRAP_SERVERS is read from the environment; an empty value is refused."""
    monkeypatch.setenv("ORDERHUB_BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    assert Settings().bootstrap_servers == "broker-1:9092,broker-2:9092"
    monkeypatch.setenv("ORDERHUB_BOOTSTRAP_SERVERS", " , ")
    with pytest.raises(ValidationError, match="at least one host:port"):
        Settings()
