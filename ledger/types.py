"""Domain aliases used across the ledger, consensus and node layers."""

from typing import NewType

Hash32 = NewType("Hash32", bytes)
"""A 32-byte hash in internal byte order (shown as lowercase hex, not reversed)."""

PubKeyHash = NewType("PubKeyHash", bytes)
"""The 20-byte HASH160 of a compressed public key: what an address encodes."""

Height = int
"""A block height; genesis is 0."""

ZERO_HASH = Hash32(bytes(32))
