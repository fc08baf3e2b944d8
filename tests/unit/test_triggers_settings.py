"""Where trigger commands find the application database: option, environment, triggers.conf,
and, for commands without a chain argument, the one chain that has a triggers.conf."""

from __future__ import annotations

import pytest

from triggers import settings
from triggers.errors import ConfigurationInvalid


def test_triggers_settings_chainless_command_uses_the_only_configured_chain(tmp_path):
    settings.write(tmp_path, "trade", "sqlite:///erp.db", None)
    (tmp_path / "other").mkdir()  # a chain directory without trigger settings
    resolved = settings.resolve(None, str(tmp_path), None, None, environ={})
    assert resolved.db_url == "sqlite:///erp.db"


def test_triggers_settings_several_configured_chains_need_an_explicit_database(tmp_path):
    settings.write(tmp_path, "trade", "sqlite:///a.db", None)
    settings.write(tmp_path, "plant", "sqlite:///b.db", None)
    with pytest.raises(ConfigurationInvalid, match="several chains"):
        settings.resolve(None, str(tmp_path), None, None, environ={})
    assert settings.resolve(None, str(tmp_path), "sqlite:///c.db", None,
                            environ={}).db_url == "sqlite:///c.db"
    assert settings.resolve("plant", str(tmp_path), None, None,
                            environ={}).db_url == "sqlite:///b.db"


def test_triggers_settings_without_any_database_say_how_to_give_one(tmp_path):
    with pytest.raises(ConfigurationInvalid, match="--db URL"):
        settings.resolve(None, str(tmp_path), None, None, environ={})
