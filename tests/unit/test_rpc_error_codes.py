"""The one table from domain errors to MultiChain error codes."""

import logging

import pytest

from config.errors import ChainmillError, ConfigError
from ledger import errors as le
from node.rpc import errors as re_


@pytest.mark.parametrize(
    ("exc_class", "code"),
    [
        (le.InvalidAddress, -5),
        (le.EntityNotFound, -708),
        (le.TxNotFound, -710),
        (le.BlockNotFound, -711),
        (le.PermissionDenied, -704),
        (le.DuplicateName, -705),
        (le.AlreadyInChain, -27),
        (le.InvalidTransaction, -26),
        (le.InvalidBlock, -25),
        (le.DecodeError, -22),
        (ConfigError, -8),
    ],
)
def test_rpc_errors_domain_error_maps_to_code(exc_class, code):
    err = re_.to_rpc_error(exc_class("what went wrong"))
    assert (err.code, err.message) == (code, "what went wrong")


def test_rpc_errors_most_specific_class_wins():
    # AlreadyInChain is an InvalidTransaction; its own entry must win over the parent's.
    assert re_.to_rpc_error(le.AlreadyInChain("x")).code == re_.RPC_VERIFY_ALREADY_IN_CHAIN

    class StreamMissing(le.EntityNotFound):
        pass

    assert re_.to_rpc_error(StreamMissing("s")).code == re_.RPC_ENTITY_NOT_FOUND


def test_rpc_errors_rpc_error_passes_through():
    original = re_.RpcError(re_.RPC_NOT_SUBSCRIBED, "not subscribed")
    assert re_.to_rpc_error(original) is original
    assert isinstance(original, ChainmillError)


def test_rpc_errors_internal_failures_get_codes_not_internal_text(caplog):
    # Issue 15.3: Python messages and SQL never reach the client; the detail is logged once.
    import sqlalchemy.exc

    caplog.set_level(logging.WARNING, logger="node.rpc.errors")
    re_._failure_logs.clear()  # what earlier tests logged must not hold these lines back
    sql = sqlalchemy.exc.OperationalError("SELECT secret FROM items WHERE x = ?", {}, None)
    cases = [
        (TypeError("expected str, got int"), -8, "Invalid parameter"),
        (KeyError("vout"), -8, "Invalid parameter"),
        (RecursionError("maximum recursion depth exceeded"), -8,
         "Invalid parameter: nested too deeply"),
        (MemoryError(), -7, "Out of memory"),
        (sql, -20, "Database error (details in the node's log)"),
        (le.StoreError("cannot prepare the insert into items: DELETE FROM x"), -32603,
         "Chain store error (details in the node's log)"),
        (RuntimeError("handler bug at 0x7f"), -32603, "Internal error (details in the node's log)"),
    ]
    for exc, code, message in cases:
        caplog.clear()
        err = re_.to_rpc_error(exc, "publish")
        assert (err.code, err.message) == (code, message), exc
        assert "SELECT" not in err.message and "0x7f" not in err.message
        (record,) = caplog.records  # once
        assert record.levelno == logging.WARNING and record.exc_info is not None
        assert "publish" in record.getMessage()
    # Repeats of one kind are not a traceback each.
    caplog.clear()
    for _ in range(50):
        re_.to_rpc_error(RuntimeError("handler bug at 0x7f"), "publish")
    assert len(caplog.records) <= 1 and all(r.exc_info is None for r in caplog.records)
    # Unmapped domain errors keep their text (written for users); empty -> the class name.
    assert re_.to_rpc_error(le.InvalidSignature()).message == "InvalidSignature"
    assert re_.to_rpc_error(le.InvalidSignature()).code == -1
def test_rpc_errors_code_constants_match_spec_table():
    expected = {
        "RPC_INVALID_REQUEST": -32600, "RPC_METHOD_NOT_FOUND": -32601,
        "RPC_INVALID_PARAMS": -32602, "RPC_INTERNAL_ERROR": -32603, "RPC_PARSE_ERROR": -32700,
        "RPC_MISC_ERROR": -1, "RPC_FORBIDDEN_BY_SAFE_MODE": -2, "RPC_TYPE_ERROR": -3,
        "RPC_WALLET_ERROR": -4, "RPC_INVALID_ADDRESS_OR_KEY": -5,
        "RPC_WALLET_INSUFFICIENT_FUNDS": -6, "RPC_OUT_OF_MEMORY": -7,
        "RPC_INVALID_PARAMETER": -8, "RPC_CLIENT_NOT_CONNECTED": -9,
        "RPC_CLIENT_IN_INITIAL_DOWNLOAD": -10, "RPC_WALLET_UNLOCK_NEEDED": -13,
        "RPC_DATABASE_ERROR": -20, "RPC_DESERIALIZATION_ERROR": -22,
        "RPC_CLIENT_NODE_ALREADY_ADDED": -23, "RPC_CLIENT_NODE_NOT_ADDED": -24,
        "RPC_VERIFY_ERROR": -25, "RPC_VERIFY_REJECTED": -26, "RPC_VERIFY_ALREADY_IN_CHAIN": -27,
        "RPC_IN_WARMUP": -28, "RPC_NOT_ALLOWED": -701, "RPC_NOT_SUPPORTED": -702,
        "RPC_NOT_SUBSCRIBED": -703, "RPC_INSUFFICIENT_PERMISSIONS": -704,
        "RPC_DUPLICATE_NAME": -705, "RPC_UNCONFIRMED_ENTITY": -706, "RPC_EXCHANGE_ERROR": -707,
        "RPC_ENTITY_NOT_FOUND": -708, "RPC_WALLET_ADDRESS_NOT_FOUND": -709,
        "RPC_TX_NOT_FOUND": -710, "RPC_BLOCK_NOT_FOUND": -711, "RPC_OUTPUT_NOT_FOUND": -712,
        "RPC_OUTPUT_NOT_DATA": -713, "RPC_INPUTS_NOT_MINE": -714,
        "RPC_WALLET_OUTPUT_NOT_FOUND": -715, "RPC_WALLET_NO_UNSPENT_OUTPUTS": -716,
        "RPC_GENERAL_FILE_ERROR": -717, "RPC_UPGRADE_REQUIRED": -718,
    }
    assert {name: getattr(re_, name) for name in expected} == expected
