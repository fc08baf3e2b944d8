"""Chain state derived from the blocks: permissions, pending admin votes, streams, miners.

A plain value object: consensus rules read it and produce effects, the node applies those
effects here and in the chain store. `copy()` is cheap (shallow dict copies of immutable
values), so a block or the mempool is validated against a scratch copy and a failure changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PermKey = tuple[bytes, bytes, str]
"""(address hash, entity txid or b"" for global, permission name)."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    createtxid: bytes
    name: str
    restrict: int
    salted: bool
    details: bytes
    creator: bytes
    height: int
    streamref: str


@dataclass(frozen=True, slots=True)
class Vote:
    admin: bytes
    start: int
    end: int
    time: int


@dataclass(slots=True)
class ChainState:
    """Everything consensus needs to know about the chain up to `height`."""

    height: int = -1
    tip_hash: bytes = b""
    perms: dict[PermKey, tuple[int, int]] = field(default_factory=dict)
    votes: dict[PermKey, dict[bytes, Vote]] = field(default_factory=dict)
    streams: dict[bytes, StreamInfo] = field(default_factory=dict)
    stream_names: dict[str, bytes] = field(default_factory=dict)
    last_mined: dict[bytes, int] = field(default_factory=dict)

    def copy(self) -> ChainState:
        return ChainState(
            self.height,
            self.tip_hash,
            dict(self.perms),
            dict(self.votes),
            dict(self.streams),
            dict(self.stream_names),
            dict(self.last_mined),
        )

    def holds(self, address: bytes, perm: str, height: int, entity: bytes = b"") -> bool:
        """Explicit grant effective at height (start <= height < end); ignores anyone-can-*."""
        r = self.perms.get((address, entity, perm))
        return r is not None and r[0] <= height < r[1]

    def holders(self, perm: str, height: int, entity: bytes = b"") -> list[bytes]:
        return [
            a for (a, e, p), (s, en) in self.perms.items()
            if p == perm and e == entity and s <= height < en
        ]

    def stream_by_name(self, name: str) -> StreamInfo | None:
        txid = self.stream_names.get(name.lower())
        return self.streams.get(txid) if txid is not None else None
