"""The token store's key handling: env or 0600 file, wrong key and altered rows refused."""

from __future__ import annotations

import os

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, update

from mes import schema
from mes.tokens import KEY_ENV, Token, TokenError, TokenStore, create_key_file, load_key


@pytest.fixture
def engine(tmp_path):
    eng = create_engine(f"sqlite:///{tmp_path / 'mes.db'}")
    schema.create_all(eng)
    yield eng
    eng.dispose()


def test_mes_tokens_key_file_is_created_owner_only_and_loaded(tmp_path) -> None:
    path = tmp_path / "keys" / "mes.key"
    assert create_key_file(path)
    assert not create_key_file(path)  # never replaced: the stored secrets need the old key
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    key = load_key(path, env={})
    Fernet(key)


def test_mes_tokens_key_file_readable_by_others_is_refused(tmp_path) -> None:
    path = tmp_path / "mes.key"
    create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="readable by others"):
        load_key(path, env={})


def test_mes_tokens_environment_key_wins_and_is_checked(tmp_path) -> None:
    key = Fernet.generate_key()
    assert load_key(tmp_path / "absent", env={KEY_ENV: key.decode()}) == key
    with pytest.raises(TokenError, match="Fernet key"):
        load_key(None, env={KEY_ENV: "not-a-key"})
    with pytest.raises(TokenError, match="does not exist"):
        load_key(tmp_path / "absent", env={})


def test_mes_tokens_wrong_key_or_altered_row_is_a_clear_error(engine) -> None:
    TokenStore(engine, Fernet.generate_key()).set_master("secret")
    with pytest.raises(TokenError, match="does not decrypt"):
        TokenStore(engine, Fernet.generate_key()).master()
    key = Fernet.generate_key()
    store = TokenStore(engine, key)
    store.set_master("secret")
    with engine.begin() as conn:
        sealed = conn.execute(schema.token.select()).mappings().one()["token"]
        conn.execute(update(schema.token).values(token=sealed[:-4] + "AAAA"))
    with pytest.raises(TokenError, match="does not decrypt"):
        store.master()


def test_mes_tokens_field_limits_and_no_secret_in_repr(engine) -> None:
    store = TokenStore(engine, Fernet.generate_key())
    with pytest.raises(TokenError, match="300"):
        store.set_master("x" * 301)
    assert store.master() is None  # nothing written
    assert "s3cret" not in repr(Token("Master", "s3cret", password="s3cret"))


def test_mes_token_master_reads_a_plain_token_or_the_bridges_json_line() -> None:
    from mes.cli import MesCliError, _token_line

    assert _token_line("abc123\n") == "abc123"
    issued = '{"kind": "Master", "name": "Plant 1 MES", "token": "tok-9"}\n'
    assert _token_line(issued) == "tok-9"  # `mes bridge --issue-master-token | mes token master`
    for bad in ('{"kind": "Master"}', '{"token": ""}', '{"token": 5}', "{not json"):
        with pytest.raises(MesCliError):
            _token_line(bad)
