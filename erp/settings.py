"""Where an erp command finds its database, stream and acting address.

`chainmill erp init --chain CHAIN --db URL` records them in `<datadir>/<chain>/erp.conf`
(mode 0600: URLs may hold passwords), so later commands need only the chain (or nothing,
when one chain of the data directory has an erp.conf). Precedence, highest first:
command-line option, environment (`CHAINMILL_ERP_DB`), that file, defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from config.paths import chain_dir, resolve_datadir, write_private_file
from erp.errors import ErpError

__all__ = ["DEFAULT_STREAM", "SETTINGS_FILE", "Settings", "resolve", "write"]

SETTINGS_FILE = "erp.conf"
DEFAULT_STREAM = "supplychain"
_DB_ENV = "CHAINMILL_ERP_DB"


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved chain, database URL, stream, acting address and data directory."""

    chain: str
    db_url: str
    stream: str
    address: str | None
    datadir: Path


def _read(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                name, value = line.split("=", 1)
                values[name.strip()] = value.strip()
    return values


def resolve(chain: str | None, datadir: str | None, db_url: str | None, stream: str | None,
            address: str | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Merge options, environment and erp.conf; ErpError without a chain or database."""
    base = resolve_datadir(datadir, environ)
    if not chain:
        found = sorted(p.parent.name for p in base.glob(f"*/{SETTINGS_FILE}"))
        if len(found) != 1:
            raise ErpError("name the chain (--chain CHAIN): "
                           + (f"several have an erp.conf ({', '.join(found)})" if found
                              else "none has an erp.conf yet (chainmill erp init)"))
        chain = found[0]
    stored = _read(chain_dir(base, chain) / SETTINGS_FILE)
    url = db_url or environ.get(_DB_ENV) or stored.get("db")
    if not url:
        raise ErpError("no ERP database: pass --db URL, set CHAINMILL_ERP_DB, or run "
                       "chainmill erp init --chain CHAIN --db URL")
    return Settings(chain, url, stream or stored.get("stream") or DEFAULT_STREAM,
                    address or stored.get("address") or None, base)


def write(settings: Settings) -> Path:
    """Record the settings of a chain in its erp.conf."""
    path = chain_dir(settings.datadir, settings.chain) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"db={settings.db_url}", f"stream={settings.stream}"]
    if settings.address:
        lines.append(f"address={settings.address}")
    write_private_file(path, "\n".join(lines) + "\n")
    return path
