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
        (le.StoreError, -32603),
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


def test_rpc_errors_anything_else_is_misc_error_logged_with_traceback(caplog):
    caplog.set_level(logging.WARNING, logger="node.rpc.errors")
    err = re_.to_rpc_error(TypeError("expected str, got int"), "publish")
    assert (err.code, err.message) == (re_.RPC_MISC_ERROR, "expected str, got int")
    assert err.code == -1
    record = caplog.records[-1]
    assert record.levelno == logging.WARNING and record.exc_info is not None
    assert "publish" in record.getMessage()
    # Unmapped domain errors too, and an empty message falls back to the class name.
    assert re_.to_rpc_error(le.InvalidSignature()).message == "InvalidSignature"


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
