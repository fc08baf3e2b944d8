"""JSON-RPC error codes (MultiChain's table) and the one mapping from domain errors to codes."""

from __future__ import annotations

import logging

from config.errors import ChainmillError, ConfigError
from ledger.errors import (
    AlreadyInChain,
    BlockNotFound,
    DecodeError,
    DuplicateName,
    EntityNotFound,
    InvalidAddress,
    InvalidBlock,
    InvalidTransaction,
    PermissionDenied,
    StoreError,
    TxLimitExceeded,
    TxNotFound,
)
from node.rpc.limits import RateLimitedLog

log = logging.getLogger(__name__)

# Standard JSON-RPC.
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700

# General (Bitcoin Core heritage).
RPC_MISC_ERROR = -1
RPC_FORBIDDEN_BY_SAFE_MODE = -2
RPC_TYPE_ERROR = -3
RPC_WALLET_ERROR = -4
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_OUT_OF_MEMORY = -7
RPC_INVALID_PARAMETER = -8
RPC_CLIENT_NOT_CONNECTED = -9
RPC_CLIENT_IN_INITIAL_DOWNLOAD = -10
RPC_WALLET_INVALID_ACCOUNT_NAME = -11
RPC_WALLET_KEYPOOL_RAN_OUT = -12
RPC_WALLET_UNLOCK_NEEDED = -13
RPC_WALLET_PASSPHRASE_INCORRECT = -14
RPC_WALLET_WRONG_ENC_STATE = -15
RPC_WALLET_ENCRYPTION_FAILED = -16
RPC_WALLET_ALREADY_UNLOCKED = -17
RPC_DATABASE_ERROR = -20
RPC_DESERIALIZATION_ERROR = -22
RPC_CLIENT_NODE_ALREADY_ADDED = -23
RPC_CLIENT_NODE_NOT_ADDED = -24
RPC_CLIENT_NODE_NOT_CONNECTED = -29
RPC_VERIFY_ERROR = -25
RPC_TRANSACTION_ERROR = RPC_VERIFY_ERROR
RPC_VERIFY_REJECTED = -26
RPC_TRANSACTION_REJECTED = RPC_VERIFY_REJECTED
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_TRANSACTION_ALREADY_IN_CHAIN = RPC_VERIFY_ALREADY_IN_CHAIN
RPC_IN_WARMUP = -28

# MultiChain-specific.
RPC_NOT_ALLOWED = -701
RPC_NOT_SUPPORTED = -702
RPC_NOT_SUBSCRIBED = -703
RPC_INSUFFICIENT_PERMISSIONS = -704
RPC_DUPLICATE_NAME = -705
RPC_UNCONFIRMED_ENTITY = -706
RPC_EXCHANGE_ERROR = -707
RPC_ENTITY_NOT_FOUND = -708
RPC_WALLET_ADDRESS_NOT_FOUND = -709
RPC_TX_NOT_FOUND = -710
RPC_BLOCK_NOT_FOUND = -711
RPC_OUTPUT_NOT_FOUND = -712
RPC_OUTPUT_NOT_DATA = -713
RPC_INPUTS_NOT_MINE = -714
RPC_WALLET_OUTPUT_NOT_FOUND = -715
RPC_WALLET_NO_UNSPENT_OUTPUTS = -716
RPC_GENERAL_FILE_ERROR = -717
RPC_UPGRADE_REQUIRED = -718


class RpcError(ChainmillError):
    """A JSON-RPC error with MultiChain's numeric code; handlers raise it for explicit codes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcError({self.code}, {self.message!r})"


class RpcBindError(ChainmillError):
    """The JSON-RPC server could not listen on any of its addresses."""


# The one table from domain errors to codes (STYLE example 3). A handler that needs a different
# code for the same domain error (getrawtransaction: unknown txid -> -5) raises RpcError itself.
DOMAIN_ERROR_CODES: dict[type[BaseException], int] = {
    InvalidAddress: RPC_INVALID_ADDRESS_OR_KEY,
    EntityNotFound: RPC_ENTITY_NOT_FOUND,
    TxNotFound: RPC_TX_NOT_FOUND,
    BlockNotFound: RPC_BLOCK_NOT_FOUND,
    PermissionDenied: RPC_INSUFFICIENT_PERMISSIONS,
    DuplicateName: RPC_DUPLICATE_NAME,
    AlreadyInChain: RPC_VERIFY_ALREADY_IN_CHAIN,
    # Before InvalidTransaction and DecodeError: a tx an RPC call would build beyond a limit
    # of the encoding is a bad parameter (-8), as MultiChain reports too many keys or too
    # large a field; the most specific class in the MRO wins.
    TxLimitExceeded: RPC_INVALID_PARAMETER,
    InvalidTransaction: RPC_VERIFY_REJECTED,
    InvalidBlock: RPC_VERIFY_ERROR,
    DecodeError: RPC_DESERIALIZATION_ERROR,
    StoreError: RPC_INTERNAL_ERROR,
    ConfigError: RPC_INVALID_PARAMETER,
}

# Resolved code per concrete exception class (None = not in the table), so the MRO is walked
# once per class rather than once per failing request.
_resolved: dict[type[BaseException], int | None] = {}


def code_for_class(cls: type[BaseException]) -> int | None:
    """The code for a domain error class: the most specific table entry in its MRO, or None."""
    try:
        return _resolved[cls]
    except KeyError:
        pass
    code = None
    for base in cls.__mro__:
        code = DOMAIN_ERROR_CODES.get(base)
        if code is not None:
            break
    _resolved[cls] = code
    return code


_PARAMETER_BUGS = (TypeError, ValueError, KeyError, IndexError, OverflowError, UnicodeError)
"""Python errors that, escaping a handler, nearly always mean a parameter no check caught."""
_failure_logs: dict[tuple[str, str], RateLimitedLog] = {}
_MAX_FAILURE_LOGS = 256


def _log_failure(exc: BaseException, method: str) -> None:
    """The detail of a handler failure, server-side: the first of each kind with its traceback,
    then at most one line a minute of that kind (a client can repeat a failing call)."""
    key = (method, type(exc).__name__)
    note = _failure_logs.get(key)
    if note is None:
        if len(_failure_logs) >= _MAX_FAILURE_LOGS:
            _failure_logs.clear()
        note = _failure_logs[key] = RateLimitedLog(log)
        log.warning("RPC method %s raised %s: %s", method, type(exc).__name__, exc, exc_info=exc)
        note.hold()
        return
    note("RPC method %s raised %s: %s", method, type(exc).__name__, str(exc)[:200])


def _database_error(exc: BaseException) -> bool:
    return any(cls.__module__.startswith(("sqlalchemy", "sqlite3", "psycopg", "pymysql",
                                          "MySQLdb"))
               for cls in type(exc).__mro__)


def to_rpc_error(exc: Exception, method: str = "") -> RpcError:
    """Map any exception raised by a handler to the RpcError the client receives.

    RpcError passes through; domain errors use DOMAIN_ERROR_CODES with their own text (written
    for users), and unmapped domain errors are -1 with it. Nothing internal reaches the client
    (issue 15.3): a store failure, a database driver error, or a Python error escaping a
    handler get MultiChain's code with a fixed message, and their detail is logged here, once.
    """
    if isinstance(exc, RpcError):
        return exc
    code = code_for_class(type(exc))
    if isinstance(exc, ChainmillError) and not isinstance(exc, StoreError):
        text = str(exc) or type(exc).__name__
        return RpcError(RPC_MISC_ERROR if code is None else code, text)
    _log_failure(exc, method)
    if isinstance(exc, StoreError):
        return RpcError(RPC_INTERNAL_ERROR, "Chain store error (details in the node's log)")
    if _database_error(exc):
        return RpcError(RPC_DATABASE_ERROR, "Database error (details in the node's log)")
    if isinstance(exc, MemoryError):
        return RpcError(RPC_OUT_OF_MEMORY, "Out of memory")
    if isinstance(exc, RecursionError):
        return RpcError(RPC_INVALID_PARAMETER, "Invalid parameter: nested too deeply")
    if isinstance(exc, _PARAMETER_BUGS):
        return RpcError(RPC_INVALID_PARAMETER, "Invalid parameter")
    return RpcError(RPC_INTERNAL_ERROR, "Internal error (details in the node's log)")
