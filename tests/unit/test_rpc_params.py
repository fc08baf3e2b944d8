"""RPC parameter converters: MultiChain's codes for bad values, and the count/start window."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.rpc.errors import RPC_INVALID_PARAMETER, RpcError
from node.rpc.params import (
    MAX_COUNT,
    as_bool,
    as_bool_lenient,
    as_count,
    as_hex,
    as_int,
    as_str,
    from_address,
    identifier_list,
    window,
)
from node.rpc.params import given as param_given


def assert_invalid(fn, *args, message=None):
    with pytest.raises(RpcError) as info:
        fn(*args)
    assert info.value.code == RPC_INVALID_PARAMETER
    if message is not None:
        assert message in info.value.message


def test_rpc_params_bool_accepts_only_json_booleans():
    assert as_bool(True, "verbose") is True
    assert as_bool(False, "verbose") is False
    for bad in (1, 0, "true", None, [], 1.0):
        assert_invalid(as_bool, bad, "verbose", message="verbose should be boolean")


def test_rpc_params_lenient_bool_accepts_setruntimeparam_forms():
    for good in (True, 1, 7, "true", "TRUE", "1", "yes", "on", "5"):
        assert as_bool_lenient(good, "gen") is True
    for good in (False, 0, "false", "0", "no", "off", ""):
        assert as_bool_lenient(good, "gen") is False
    for bad in ("maybe", None, 1.5, [], {}):
        assert_invalid(as_bool_lenient, bad, "gen")


def test_rpc_params_int_refuses_booleans_and_floats():
    assert as_int(-3, "start") == -3
    for bad in (True, 1.0, "1", None):
        assert_invalid(as_int, bad, "start")


def test_rpc_params_count_is_a_non_negative_integer():
    assert as_count(0) == 0
    assert as_count(MAX_COUNT) == MAX_COUNT
    for bad in (-1, True, "10", 2.0, None):
        assert_invalid(as_count, bad, message="invalid count")


def test_rpc_params_str():
    assert as_str("", "key") == ""
    for bad in (1, None, b"x", ["a"]):
        assert_invalid(as_str, bad, "key")


def test_rpc_params_identifier_list_forms():
    assert identifier_list("*") is None
    assert identifier_list("a") == ["a"]
    assert identifier_list("a,b") == ["a", "b"]
    assert identifier_list(["a", "b,c"]) == ["a", "b,c"]
    assert identifier_list([]) == []
    for bad in (1, None, {"a": 1}, ["a", 2], "a,,b", "", [""]):
        assert_invalid(identifier_list, bad)


def test_rpc_params_hex_accepts_either_case():
    assert as_hex("48656C6c6f", "data") == b"Hello"
    assert as_hex("", "data") == b""
    for bad in ("abc", "zz", "ab cd", " abcd", "é0", 12, None):
        assert_invalid(as_hex, bad, "data")


def reference_window(total, count, start):
    """The spec's words, applied to a real list."""
    entries = list(range(total))
    if start is None:
        start = -count
    if start < 0:
        start = max(0, total + start)
    return entries[start:start + count]


@given(
    total=st.integers(min_value=0, max_value=300),
    count=st.integers(min_value=0, max_value=400),
    start=st.none() | st.integers(min_value=-400, max_value=400),
)
def test_rpc_params_window_matches_reference(total, count, start):
    offset, length = window(total, count, start)
    assert 0 <= offset <= total
    assert 0 <= length <= count
    assert offset + length <= total
    assert list(range(total))[offset:offset + length] == reference_window(total, count, start)


@given(total=st.integers(min_value=0, max_value=10**6), count=st.integers(min_value=1, max_value=50))
def test_rpc_params_window_default_is_the_last_count_entries(total, count):
    offset, length = window(total, count, None)
    assert length == min(count, total)
    assert offset + length == total


def test_rpc_params_window_examples():
    assert window(100, 10, None) == (90, 10)
    assert window(5, 10, None) == (0, 5)
    assert window(100, MAX_COUNT, None) == (0, 100)
    assert window(100, 10, 0) == (0, 10)
    assert window(100, 10, 95) == (95, 5)
    assert window(100, 10, 200) == (100, 0)
    assert window(100, 10, -3) == (97, 3)
    assert window(0, 10, None) == (0, 0)


def test_rpc_params_null_optional_parameter_is_not_given():
    assert param_given([1, None, 3], 0) and param_given([1, None, 3], 2)
    assert not param_given([1, None, 3], 1) and not param_given([1, None, 3], 3)
    assert all(param_given([False, 0, ""], i) for i in range(3))


def test_rpc_params_star_from_address_lets_the_wallet_choose():
    assert from_address("*") is None
    assert from_address("1abc") == "1abc"
    for bad in (None, 1, ["*"]):
        assert_invalid(from_address, bad)
