"""Where a trigger command finds its database and hooks: options, environment, triggers.conf.

`chainmill receive CHAIN TXID HEIGHT` runs as the node's walletnotify hook with only the
chain name to go on, so `chainmill triggers init --chain CHAIN` records the database URL in
`<datadir>/<chain>/triggers.conf` (mode 0600: URLs may hold passwords). Precedence, highest
first: command-line option, environment (`CHAINMILL_TRIGGERS_DB`, `CHAINMILL_TRIGGERS_HOOKS`),
that file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from config.paths import chain_dir, resolve_datadir, write_private_file
from triggers.errors import ConfigurationInvalid

__all__ = ["SETTINGS_FILE", "Settings", "resolve", "write"]

SETTINGS_FILE = "triggers.conf"
_DB_ENV = "CHAINMILL_TRIGGERS_DB"
_HOOKS_ENV = "CHAINMILL_TRIGGERS_HOOKS"


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved database URL, hooks spec and data directory."""

    db_url: str
    hooks: str | None
    datadir: Path


def _read(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        values[name.strip()] = value.strip()
    return values


def resolve(
    chain: str | None,
    datadir: str | None,
    db_url: str | None,
    hooks: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Merge option, environment and triggers.conf; ConfigurationInvalid without a database."""
    base = resolve_datadir(datadir, environ)
    if not chain and not (db_url or environ.get(_DB_ENV)):
        chain = _only_configured_chain(base)
    stored = _read(chain_dir(base, chain) / SETTINGS_FILE) if chain else {}
    url = db_url or environ.get(_DB_ENV) or stored.get("db")
    if not url:
        raise ConfigurationInvalid(
            "no application database: pass --db URL, set CHAINMILL_TRIGGERS_DB, or run "
            "chainmill triggers init --chain CHAIN --db URL"
        )
    return Settings(url, hooks or environ.get(_HOOKS_ENV) or stored.get("hooks") or None, base)


def _only_configured_chain(base: Path) -> str | None:
    """The one chain of the data directory whose triggers.conf records a database, so that
    commands without a chain argument (add, list, relate, relay) need no --db either."""
    found = sorted(p.parent.name for p in base.glob(f"*/{SETTINGS_FILE}"))
    if len(found) > 1:
        raise ConfigurationInvalid(
            f"several chains in {base} have a trigger database ({', '.join(found)}): "
            "pass --db URL")
    return found[0] if found else None


def write(datadir: Path, chain: str, db_url: str, hooks: str | None) -> Path:
    """Record the database URL (and hooks) for `chain` in its triggers.conf."""
    path = chain_dir(datadir, chain) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"db={db_url}"] + ([f"hooks={hooks}"] if hooks else [])
    write_private_file(path, "\n".join(lines) + "\n")
    return path
