"""MultiChain's transaction JSON shape built from chainmill operations, and message signing."""

import base64
import hashlib

from ledger.keys import KeyPair
from ledger.transactions import NO_END, PERM_BITS, CreateStream, DataFormat, Permission, Publish
from node.rpc.methods.wallettxs import message_digest, message_signer, sign_message
from node.views import create_entry, op_script, permission_entry, script_json, vin_view


def test_rpc_txshape_script_pushes_use_the_smallest_opcode():
    for n, prefix in [(0, "00"), (75, "4b"), (76, "4c4c"), (255, "4cff"), (256, "4d0001"),
                      (65536, "4e00000100")]:
        out = script_json([b"\x00" * n])
        assert out["hex"].startswith(prefix), n
        assert len(out["hex"]) == len(prefix) + 2 * n
    assert script_json([b"\xab", 0x75, 0x6A]) == {"asm": "ab OP_DROP OP_RETURN",
                                                   "hex": "01ab756a"}


def test_rpc_txshape_scripts_of_each_operation_are_non_empty_and_distinct():
    pub = Publish(b"\x11" * 32, ("k",), DataFormat.RAW, b"\x01\x02")
    perm = Permission(b"\x22" * 20, b"", PERM_BITS["send"], 0, NO_END)
    create = CreateStream("s", 1, True, b"{}")
    scripts = [script_json(op_script(op)) for op in (pub, perm, create)]
    assert all(s["asm"] and s["hex"] for s in scripts)
    assert len({s["hex"] for s in scripts}) == 3
    assert scripts[1]["asm"].endswith("OP_DUP OP_HASH160 " + "22" * 20
                                      + " OP_EQUALVERIFY OP_CHECKSIG")
    assert scripts[0]["asm"].endswith("OP_RETURN 0102")


def test_rpc_txshape_permission_entry_puts_low_and_high_in_custom():
    op = Permission(b"\x22" * 20, b"", PERM_BITS["send"] | PERM_BITS["low2"]
                    | PERM_BITS["high1"], 5, 10)
    entry = permission_entry(op, None, 1234)
    assert entry["for"] is None and entry["send"] is True and entry["connect"] is False
    assert entry["custom"] == ["high1", "low2"]
    assert (entry["startblock"], entry["endblock"], entry["timestamp"]) == (5, 10, 1234)
    assert "low2" not in entry


def test_rpc_txshape_vin_keeps_the_nonce_exact_for_javascript():
    vin = vin_view("1addr", b"\x02" + b"\x33" * 32, b"\x30\x44" + b"\x01" * 68, 2**64 - 1)
    assert vin["nonce"] == "ffffffffffffffff"
    assert set(vin) >= {"txid", "vout", "scriptSig", "sequence"}
    assert vin["scriptSig"]["asm"].startswith("3044") and "[ALL]" in vin["scriptSig"]["asm"]
    assert create_entry(CreateStream("n", 0, True, b"{}"), None)["salted"] is True


def test_rpc_txshape_message_signature_is_bitcoin_compact_and_recoverable():
    message = "chainmill"
    magic = b"\x18Bitcoin Signed Message:\n"
    expected = hashlib.sha256(hashlib.sha256(magic + b"\x09chainmill").digest()).digest()
    assert message_digest(message) == expected
    key = KeyPair(b"\x01" * 32)
    sig = sign_message(key, message)
    raw = base64.b64decode(sig)
    assert len(raw) == 65 and 31 <= raw[0] <= 34  # compressed-key headers
    assert message_signer(sig, message) == key.pubkey
    assert message_signer(sig, message + "!") != key.pubkey
    assert message_signer("not base64!", message) is None
    assert message_signer(base64.b64encode(b"\x00" * 65).decode(), message) is None
