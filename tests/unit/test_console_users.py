"""Console admin users: scrypt hashes, a 0600 file, bad input refused without a change."""

from __future__ import annotations

import json
import os
import stat

import pytest

from config.errors import ConfigError
from node.console.users import add_user, check_password, hash_password, load_users


def test_console_users_hash_checks_the_right_password_only():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert check_password("correct horse", stored)
    assert not check_password("correct horsf", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time


@pytest.mark.parametrize("stored", ["", "plain", "md5$1$2$3$aa$bb", "scrypt$x$8$1$aa$bb",
                                    "scrypt$16384$8$1$!!$!!"])
def test_console_users_malformed_hash_never_matches(stored):
    assert not check_password("anything", stored)


def test_console_users_file_is_private_and_holds_no_password(tmp_path):
    path = tmp_path / "console-users.json"
    add_user(path, "auditor", "correct horse")
    add_user(path, "plant.it", "battery staple")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    users = load_users(path)
    assert set(users) == {"auditor", "plant.it"}
    assert "correct horse" not in path.read_text()
    assert check_password("battery staple", users["plant.it"])


@pytest.mark.parametrize(("name", "password"), [
    ("", "long enough"), ("a b", "long enough"), ("x" * 65, "long enough"),
    ("ok", "short"), ("ok", "p" * 1025), ("<script>", "long enough")])
def test_console_users_bad_input_is_refused_and_changes_nothing(tmp_path, name, password):
    path = tmp_path / "console-users.json"
    add_user(path, "auditor", "correct horse")
    before = path.read_bytes()
    with pytest.raises(ConfigError):
        add_user(path, name, password)
    assert path.read_bytes() == before


def test_console_users_not_a_users_file_is_a_clear_error(tmp_path):
    path = tmp_path / "console-users.json"
    path.write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(ConfigError, match="not a console users file"):
        load_users(path)
