"""Named errors raised by the ledger and consensus layers.

Each error is documented once here; the JSON-RPC layer maps them to MultiChain error codes in
one table (node/rpc/errors.py).
"""

from config.errors import ChainmillError, ConfigError

__all__ = [
    "ChainmillError",
    "ConfigError",
    "DecodeError",
    "InvalidSignature",
    "InvalidAddress",
    "NotFound",
    "BlockNotFound",
    "TxNotFound",
    "EntityNotFound",
    "InvalidTransaction",
    "TxLimitExceeded",
    "AlreadyInChain",
    "InvalidBlock",
    "PermissionDenied",
    "DuplicateName",
    "StoreError",
]


class DecodeError(ChainmillError):
    """Bytes do not decode: truncated input, trailing bytes, bad lengths or bad enum values."""


class InvalidSignature(ChainmillError):
    """A signature does not verify, or a public key cannot be recovered from it."""


class InvalidAddress(ChainmillError):
    """An address, public key or private key string is malformed or has a bad checksum."""


class NotFound(ChainmillError):
    """Something looked up by identifier does not exist."""


class BlockNotFound(NotFound):
    """No block with this hash, or no block at this height on the active chain."""


class TxNotFound(NotFound):
    """No transaction with this txid (in the chain, the mempool or the given stream)."""


class EntityNotFound(NotFound):
    """No stream with this name, stream reference or creation txid."""


class InvalidTransaction(ChainmillError):
    """A transaction breaks a rule: structure, size, signature, permission or state."""


class TxLimitExceeded(DecodeError, InvalidTransaction):
    """A transaction breaks a structural limit of its encoding (number of operations, keys per
    item, key, name, data or details size, field ranges): the decoder refuses it, so it can be
    neither built, pooled, mined nor connected. ledger/transactions.py `check_structure`."""


class AlreadyInChain(InvalidTransaction):
    """A transaction with this txid is already confirmed or already in the mempool (replay)."""


class InvalidBlock(ChainmillError):
    """A block breaks a consensus rule; its sender is to be penalised."""


class PermissionDenied(ChainmillError):
    """The signing address lacks a permission the operation needs."""


class DuplicateName(ChainmillError):
    """An entity (stream) with this name already exists; names compare case-insensitively."""


class StoreError(ChainmillError):
    """The chain store cannot be opened or is inconsistent with the chain parameters."""
