"""Opening the application database with errors an operator can act on, in one line.

A missing DB driver names the chainmill extra that installs it; a server that refuses the
connection (down, wrong port, unknown role, bad password) is reported with the server's own
first line and the URL without its password, never as a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from triggers.errors import ConfigurationInvalid

__all__ = ["open_database", "EXTRAS"]

EXTRAS = {
    "psycopg": "postgres",
    "psycopg2": "postgres",
    "pymysql": "mariadb",
    "MySQLdb": "mariadb",
    "mariadb": "mariadb",
}
"""Driver module -> the chainmill extra (`pip install -e '.[EXTRA]'`) that provides it."""

_DIALECT_EXTRA = {"postgresql": "postgres", "mysql": "mariadb", "mariadb": "mariadb"}


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_database(
    url: str, prepare: Callable[[Engine], None] | None = None, **options: object
) -> Engine:
    """An engine for `url` whose first connection has succeeded; ConfigurationInvalid else.
    `prepare` runs on the engine before that connection (event listeners go there)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationInvalid(f"not a database URL: {exc}") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed, **options)  # type: ignore[arg-type]
    except NoSuchModuleError:
        raise ConfigurationInvalid(f"unknown database dialect in {shown}") from None
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(module) or _DIALECT_EXTRA.get(parsed.get_backend_name())
        hint = f": pip install -e '.[{extra}]'" if extra else ""
        raise ConfigurationInvalid(
            f"the database driver {module or parsed.get_driver_name()!r} for {shown} is not "
            f"installed{hint}") from None
    if prepare is not None:
        prepare(engine)
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        raise ConfigurationInvalid(
            f"cannot connect to the database {shown}: {_first_line(exc)}") from None
    return engine
