"""Item data as the explorer shows it: JSON pretty, text, hex dump, off-chain reference."""

from __future__ import annotations

from node.console.decode import decode, hex_dump


def test_console_decode_json_is_pretty_printed():
    shown = decode({"json": {"qty": 5, "sku": "Ä-17"}})
    assert shown.kind == "json"
    assert shown.text == '{\n  "qty": 5,\n  "sku": "Ä-17"\n}'


def test_console_decode_text_and_utf8_hex_show_as_text():
    assert decode({"text": "zwei"}).kind == "text"
    shown = decode("48656c6c6f0a776f726c64")
    assert (shown.kind, shown.text) == ("text", "Hello\nworld")


def test_console_decode_binary_is_a_hex_dump():
    shown = decode("00ff10")
    assert shown.kind == "hex"
    assert shown.text == "00000000  00 ff 10" + " " * 39 + "  ..."


def test_console_decode_hex_dump_lines_have_offsets():
    lines = hex_dump(bytes(range(40))).splitlines()
    assert [line[:8] for line in lines] == ["00000000", "00000010", "00000020"]


def test_console_decode_offchain_reference_and_odd_values_do_not_fail():
    assert decode({"txid": "ab" * 32, "vout": 0, "size": 9}).kind == "offchain"
    assert decode("not hex").kind == "text"
    assert decode(None).kind == "text"
