"""Declaring systems and shares: a system is a closed stream only the company may write.

A system `acme.plant1.cnc` is a stream of that name created closed (MultiChain's per-stream
write permission: only its creator and the addresses granted `<stream>.write` may publish),
so a partner's node refuses an observation forged under the company's system. A share
names a partner's address, a filter and an optional downsampling interval; the partner
must have published its RSA key on `pubkeys` (`chainmill keys generate`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from mes.sharing.filters import parse_filter
from mes.sharing.observations import SharingError, check_system_name
from mes.sharing.schema import create_tables, shares, systems
from triggers.keys_command import ensure_system_streams
from triggers.nodes import NodeClient, rpc_error_code, rpc_errors

__all__ = ["declare_system", "grant_writers", "add_share", "end_share", "check_address"]

log = logging.getLogger(__name__)

_DUPLICATE_NAME = -705
_ADDRESS = re.compile(r"[1-9A-HJ-NP-Za-km-z]{20,64}")


def check_address(address: str) -> str:
    """A base58 address (shape only; the node checks the rest)."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise SharingError(f"{address!r} is not an address")
    return address


def grant_writers(client: NodeClient, system: str, owner: str, writers: Sequence[str]) -> str | None:
    """Let more of the company's own addresses publish on the system's stream."""
    writers = [check_address(w) for w in writers]
    if not writers:
        return None
    return str(client.call("grantfrom", owner, ",".join(writers), f"{system}.write"))


def declare_system(engine: Engine, client: NodeClient, name: str, owner: str,
                   writers: Sequence[str] = (), description: str = "") -> str | None:
    """Create the system's closed stream from `owner` (or adopt it when `owner` created it),
    grant `writers`, subscribe, and record the system. Returns the creating txid when the
    stream was created now (items can be published once it is confirmed)."""
    check_system_name(name)
    check_address(owner)
    create_tables(engine)
    ensure_system_streams(client)
    created = None
    try:
        created = str(client.call("createfrom", owner, "stream", name, False))
        log.info("created closed stream %s", name)
    except rpc_errors() as exc:
        if rpc_error_code(exc) != _DUPLICATE_NAME:
            raise
    info = client.call("getstreaminfo", name, True)
    if not (info.get("restrict") or {}).get("write"):
        raise SharingError(f"stream {name} exists and is open to every writer: choose "
                           "another system name")
    if owner not in (info.get("creators") or []):
        raise SharingError(f"stream {name} was created by another address")
    client.call("subscribe", name)
    grant_writers(client, name, owner, writers)
    with engine.begin() as conn:
        exists = conn.execute(select(systems.c.name).where(systems.c.name == name)).first()
        if exists:
            conn.execute(update(systems).where(systems.c.name == name)
                         .values(owner_address=owner, description=description))
        else:
            conn.execute(systems.insert().values(name=name, owner_address=owner,
                                                 description=description))
    return created


def add_share(engine: Engine, system: str, partner: str, filter_text: str = "",
              every: int = 0) -> int:
    """Record a share; returns its id. The filter is parsed now, so a bad one is refused."""
    check_address(partner)
    parse_filter(filter_text)
    if not isinstance(every, int) or every < 0:
        raise SharingError("downsampling interval must be 0 or a positive number of seconds")
    with engine.begin() as conn:
        if conn.execute(select(systems.c.name).where(systems.c.name == system)).first() is None:
            raise SharingError(f"no system {system!r}; declare it first")
        result = conn.execute(shares.insert().values(system=system, partner=partner,
                                                     filter=filter_text, every_seconds=every,
                                                     active=True))
        return int(result.inserted_primary_key[0])


def end_share(engine: Engine, share_id: int) -> None:
    """Stop sharing: later observations are no longer readable by that partner (what was
    already shared stays readable: it is on every node)."""
    with engine.begin() as conn:
        if conn.execute(update(shares).where(shares.c.share_id == share_id)
                        .values(active=False)).rowcount != 1:
            raise SharingError(f"no share {share_id}")
