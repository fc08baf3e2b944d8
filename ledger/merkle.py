"""Merkle roots with domain-separated hashing.

Leaves are hashed as SHA-256(0x00 || txid) and inner nodes as SHA-256(0x01 || left || right),
so a leaf can never be taken for a node. An odd node at any level is carried up unchanged
instead of being paired with itself: Bitcoin's duplication lets two different transaction
lists share one root (CVE-2012-2459); carrying up does not.
"""

import hashlib
from collections.abc import Sequence

from ledger.types import ZERO_HASH, Hash32

_LEAF = b"\x00"
_NODE = b"\x01"


def merkle_root(txids: Sequence[bytes]) -> Hash32:
    """Root over txids in block order; 32 zero bytes for an empty list."""
    if not txids:
        return ZERO_HASH
    sha = hashlib.sha256
    level = [sha(_LEAF + t).digest() for t in txids]
    while len(level) > 1:
        nxt = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return Hash32(level[0])
