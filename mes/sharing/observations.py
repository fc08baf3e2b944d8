"""CNC samples as SensorThings observations, and the rules that choose who may read each one.

Pure. One stored `cnc_data` row gives one observation per payload variable that has a number
or a string value (`seq`, a transport counter, is skipped): the Datastream is
`<system>/<cnc_id>/<variable>`. An observation's id is a hash of its content (system, machine,
time, program, payload hash, variable), so it is the same after a database rebuild and
serves as the stream item key that makes publication idempotent; the key reveals nothing
about the reading.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.errors import ChainmillError
from mes.sharing.filters import Filter

__all__ = [
    "SharingError",
    "SYSTEM_NAME",
    "check_system_name",
    "Share",
    "observations_of",
    "filter_fields",
    "Downsampler",
    "readers_of",
]

SYSTEM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*){1,5}")
MAX_SYSTEM_CHARS = 32
SKIPPED_VARIABLES = frozenset({"seq"})


class SharingError(ChainmillError):
    """A system, share or observation that cannot be used."""


def check_system_name(name: str) -> str:
    """`company.site.kind` (2-6 dot-separated lower-case parts, at most 32 characters):
    the name is also the stream name, so it must be a valid stream name."""
    if not isinstance(name, str) or len(name) > MAX_SYSTEM_CHARS or not SYSTEM_NAME.fullmatch(name):
        raise SharingError(f"system name {name!r} must look like company.plant.kind "
                           f"(lower case, at most {MAX_SYSTEM_CHARS} characters)")
    return name


@dataclass(frozen=True)
class Share:
    """Observations of `system` matching `filter` are readable by `partner` (an address);
    with `every` > 0, at most one per Datastream per `every` seconds."""

    share_id: int
    system: str
    partner: str
    filter: Filter
    every: int = 0


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def observations_of(system: str, row: Mapping[str, Any], result_time: int) -> list[dict[str, Any]]:
    """The observations of one `cnc_data` row (keys: cnc_id, part_program, timestamp,
    json_data, payload_hash)."""
    try:
        payload = json.loads(row["json_data"])
    except (TypeError, ValueError):
        return []
    if not isinstance(payload, dict):
        return []
    out = []
    for variable in sorted(payload):
        value = payload[variable]
        if variable in SKIPPED_VARIABLES or isinstance(value, bool):
            continue
        if not isinstance(value, int | float | str):
            continue
        ident = hashlib.sha256("|".join(
            (system, row["cnc_id"], str(row["timestamp"]), row["part_program"],
             row["payload_hash"], variable)).encode("utf-8")).hexdigest()
        out.append({
            "@iot.id": ident,
            "phenomenonTime": _iso(int(row["timestamp"])),
            "resultTime": _iso(result_time),
            "result": value,
            "Datastream": {"@iot.id": f"{system}/{row['cnc_id']}/{variable}"},
            "cnc_id": row["cnc_id"],
            "part_program": row["part_program"],
            "variable": variable,
            "system": system,
        })
    return out


def filter_fields(observation: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a share filter may test."""
    return {"variable": observation["variable"], "result": observation["result"],
            "cnc_id": observation["cnc_id"], "part_program": observation["part_program"],
            "datastream": observation["Datastream"]["@iot.id"]}


def _seconds(iso: str) -> int:
    return int(dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())


class Downsampler:
    """Per (share, Datastream): the phenomenon time last let through. Pass `state` in and
    read it back to persist it with the outbox rows in one transaction."""

    def __init__(self, state: dict[tuple[int, str], int] | None = None) -> None:
        self.state = dict(state or {})
        self.changed: dict[tuple[int, str], int] = {}

    def allow(self, share: Share, observation: Mapping[str, Any]) -> bool:
        if share.every <= 0:
            return True
        key = (share.share_id, observation["Datastream"]["@iot.id"])
        t = _seconds(observation["phenomenonTime"])
        last = self.state.get(key)
        if last is not None and t < last + share.every:
            return False
        self.state[key] = self.changed[key] = t
        return True


def readers_of(observation: Mapping[str, Any], shares: Sequence[Share],
               downsampler: Downsampler, owner: Iterable[str]) -> list[str]:
    """Addresses that may read `observation`: the owner's and every partner whose share of
    this system matches (and whose downsampling lets it through)."""
    readers = list(dict.fromkeys(owner))
    fields = filter_fields(observation)
    for share in shares:
        if share.system != observation["system"] or not share.filter.matches(fields):
            continue
        if downsampler.allow(share, observation) and share.partner not in readers:
            readers.append(share.partner)
    return readers
