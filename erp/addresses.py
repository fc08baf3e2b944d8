"""Which address belongs to a public key on a chain: the CREATE_AGENT proof of identity.

An agent *is* an address; its `public_key` is that address's compressed key. Deriving the
address needs only the chain's address version and checksum mask, which any
MultiChain-compatible node reports in `getblockchainparams`, so the check stays pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from erp.errors import ErpError
from ledger.addresses import AddressCodec
from ledger.hashing import hash160

__all__ = ["address_function", "chain_address_function"]


def address_function(pubkeyhash_version: bytes, checksum_mask: bytes) -> Callable[[str], str]:
    """address_of(public_key_hex) for a chain with these address parameters."""
    codec = AddressCodec(pubkeyhash_version, b"\x80", checksum_mask)

    def address_of(public_key: str) -> str:
        return codec.encode(hash160(bytes.fromhex(public_key)))

    return address_of


def chain_address_function(client: Any) -> Callable[[str], str]:
    """address_of for the chain of the node behind `client` (from getblockchainparams)."""
    params = client.call("getblockchainparams")
    try:
        version = bytes.fromhex(params["address-pubkeyhash-version"])
        mask = bytes.fromhex(params["address-checksum-value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ErpError(f"the node reports no usable address parameters: {exc}") from None
    return address_function(version, mask)
