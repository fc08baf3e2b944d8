"""MultiChain 2.3 compatibility of the JSON-RPC surface: what ported clients send and expect.

What: null for an optional parameter means its default (MultiChain reads every optional
parameter as `params.size() > i && !params[i].isNull()`); "*" as a from-address lets the
wallet choose; a duplicated address is -8; MultiChain's error codes for unknown txids,
blocks and nodes; setruntimeparam validation; the fields typed clients require.

How: one real node per test with short block times; calls go over HTTP through chainmill's
client, with nulls sent explicitly as a JSON client library sends them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from framework import assert_raises_rpc_error
from golden_support import ordered_keys, shape, unsafe_integers
from network_support import cut_link, heal_link, start_network

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_compat")


def test_null_means_default_and_star_from_address(harness):
    node = harness.start_node()
    user = node.getnewaddress()

    log.info("grant with every optional parameter null, as an npm client sends it")
    txid = node.rpc.call("grant", user, "send", None, None, None, None, None)
    node.wait_for_confirmation(txid)
    perms = node.listpermissions("send", user)
    assert [(p["type"], p["startblock"], p["endblock"]) for p in perms] == [
        ("send", 0, 4294967295)]

    log.info("grantfrom and revokefrom with '*' as the from-address and null amounts")
    txid = node.rpc.call("grantfrom", "*", user, "receive", None, None, None, None, None)
    node.wait_for_confirmation(txid)
    assert [p["type"] for p in node.listpermissions("receive", user)] == ["receive"]
    txid = node.rpc.call("revokefrom", "*", user, "receive", None, None, None)
    node.wait_for_confirmation(txid)
    assert node.listpermissions("receive", user) == []
    txid = node.rpc.call("revoke", user, "send", None, None, None)
    node.wait_for_confirmation(txid)
    assert node.listpermissions("send", user) == []

    log.info("create, publish and read with '*' and nulls")
    txid = node.rpc.call("createfrom", "*", "stream", "compat", True, None)
    node.wait_for_confirmation(txid)
    txid = node.rpc.call("publishfrom", "*", "compat", "k", {"text": "hello"}, None)
    node.rpc.call("publish", "compat", "k2", "00", None)
    node.wait_for_confirmation(txid)
    node.subscribe("compat", None)
    items = node.rpc.call("liststreamitems", "compat", None, None, None, None)
    assert [i["keys"] for i in items] == [["k"], ["k2"]]
    assert "vout" not in items[0]  # verbose null -> false
    assert node.rpc.call("liststreamkeyitems", "compat", "k", None, None, None, None)[0][
        "data"] == {"text": "hello"}
    assert node.rpc.call("liststreams", None, None, None, None)[0]["name"] == "root"
    assert node.rpc.call("getblock", 0, None)["height"] == 0
    assert isinstance(node.rpc.call("getrawtransaction", txid, None), str)
    assert node.rpc.call("listpermissions", None, None, None) == node.listpermissions()
    assert node.rpc.call("getaddresses", None) == node.getaddresses()
    assert node.rpc.call("getblockchainparams", None, None) == node.getblockchainparams()

    log.info("a required parameter sent as null is still refused")
    assert_raises_rpc_error(-8, None, node.rpc.call, "grant", None, "send")


def test_duplicated_address_is_refused_and_changes_nothing(harness):
    node = harness.start_node()
    node.pause("mining")
    a, b = node.getnewaddress(), node.getnewaddress()
    before = (node.getrawmempool(), node.listpermissions())
    for method, params in [("grant", [f"{a},{b},{a}", "send"]),
                           ("grantfrom", ["*", f"{a},{a}", "send"]),
                           ("revoke", [f"{b},{b}", "send"])]:
        err = assert_raises_rpc_error(-8, None, node.rpc.call, method, *params)
        assert "duplicated address" in err.message
    assert (node.getrawmempool(), node.listpermissions()) == before


def test_error_codes_of_multichain(harness):
    node = harness.start_node()
    node.wait_for_confirmation(node.create("stream", "pair", True))
    unknown = "ab" * 32

    log.info("unknown txid: -710 from getrawtransaction, gettxoutdata and getstreamitem")
    for fn, args in [(node.getrawtransaction, (unknown,)), (node.getrawtransaction, (unknown, 1)),
                     (node.gettxoutdata, (unknown, 0)), (node.getstreamitem, ("pair", unknown))]:
        assert_raises_rpc_error(-710, None, fn, *args)

    log.info("negative or non-numeric block: -711; a string height for getblockhash: -1")
    for ident in (-1, "-1", "abc", "12x", True):
        assert_raises_rpc_error(-711, None, node.getblock, ident)
    assert node.getblock("0")["height"] == 0
    assert_raises_rpc_error(-1, None, node.getblockhash, "0")
    assert_raises_rpc_error(-711, None, node.getblockhash, -1)

    log.info("getstreamitem of a transaction with two items in the stream: -701")
    two = node.publishmulti("pair", [{"key": "a", "data": "00"}, {"key": "b", "data": "01"}])
    one = node.publish("pair", "c", "02")
    node.subscribe("pair")
    assert_raises_rpc_error(-701, None, node.getstreamitem, "pair", two)
    assert node.getstreamitem("pair", one)["keys"] == ["c"]
    assert len(node.liststreamtxitems("pair", two)) == 2

    log.info("getaddednodeinfo of a node never added: -24")
    assert_raises_rpc_error(-24, None, node.getaddednodeinfo, True, "127.0.0.1:1")
    assert node.getaddednodeinfo(True) == []


# getruntimeparams in rpcmisc.cpp (MultiChain 2.3), in its order.
MULTICHAIN_RUNTIME_KEYS = [
    "port", "reindex", "rescan", "txindex", "autocombineminconf", "autocombinemininputs",
    "autocombinemaxinputs", "autocombinedelay", "autocombinesuspend", "autosubscribe",
    "handshakelocal", "bantx", "lockblock", "hideknownopdrops", "maxshowndata",
    "maxqueryscanitems", "v1apicompatible", "miningrequirespeers", "mineemptyrounds",
    "miningturnover", "lockadminminerounds", "gen", "genproclimit", "lockinlinemetadata",
    "acceptfiltertimeout", "sendfiltertimeout",
]


def test_setruntimeparam_validates_and_changes_nothing_on_error(harness):
    seed, joiner = start_network(harness, 2)
    params = joiner.getruntimeparams()
    assert list(params) == MULTICHAIN_RUNTIME_KEYS
    assert params["handshakelocal"] == joiner.getaddresses()[0]
    assert isinstance(params["autosubscribe"], str) and isinstance(params["bantx"], str)

    log.info("bad values: MultiChain's codes, and every parameter keeps its value")
    for name, value, code in [("handshakelocal", "bad", -5), ("handshakelocal", 1, -8),
                              ("autosubscribe", "bogus", -8), ("maxshowndata", -1, -8),
                              ("maxshowndata", "lots", -8), ("miningturnover", 2, -8),
                              ("miningrequirespeers", "maybe", -8), ("bantx", "x", -8),
                              ("lockblock", "00", -8), ("rpcpassword", "x", -8),
                              ("nosuchparam", 1, -8)]:
        assert_raises_rpc_error(code, None, joiner.setruntimeparam, name, value)
    assert joiner.getruntimeparams() == params

    log.info("incoming handshakes still succeed after the refused handshakelocal")
    cut_link(seed, joiner)
    heal_link(seed, joiner)

    log.info("good values take effect, including the settable names MultiChain added")
    own = joiner.getnewaddress()
    for name, value in [("handshakelocal", own), ("autosubscribe", "streams"),
                        ("maxshowndata", "10"), ("lockinlinemetadata", False),
                        ("acceptfiltertimeout", 50), ("bantx", ""), ("mineemptyrounds", 5)]:
        joiner.setruntimeparam(name, value)
    now = joiner.getruntimeparams()
    assert (now["handshakelocal"], now["autosubscribe"], now["maxshowndata"],
            now["lockinlinemetadata"], now["acceptfiltertimeout"], now["mineemptyrounds"]) == (
        own, "streams", 10, False, 50, 5.0)


def test_fields_typed_clients_require(harness):
    seed, joiner = start_network(harness, 2)
    me = seed.getaddresses()[0]
    txid = seed.create("stream", "typed", {"restrict": "write", "salted": True})
    seed.wait_for_confirmation(txid)
    item = seed.publish("typed", "k", "00")
    seed.wait_for_confirmation(item)
    height = seed.getblockcount()

    log.info("mining, wallet and peer fields")
    assert seed.getmininginfo()["networkhashps"] == 0
    assert seed.getwalletinfo()["utxocount"] == 0
    peers = seed.getpeerinfo()
    assert peers and all(p["encrypted"] in (True, False) and p["whitelisted"] is False
                         for p in peers)
    params = seed.getblockchainparams()
    names = list(params)
    assert names[names.index("mining-turnover") + 1] == "minimum-block-txs"
    assert params["minimum-block-txs"] == 0
    assert seed.getblockchainparams(False)["minimumblocktxs"] == 0

    log.info("blocks: chainwork everywhere, verbose-3 version/locktime, listblocks verbose")
    block = seed.getblock(height)
    assert block["chainwork"] == seed.getblockchaininfo()["chainwork"]
    tx3 = seed.getblock(height, 3)["tx"][0]
    assert list(tx3) == ["txid", "version", "locktime", "hex"]
    listed = seed.listblocks(f"{height - 1}-{height}", True)
    assert list(listed[0]) == ["hash", "miner", "confirmations", "height", "time", "txcount",
                               "size", "version", "merkleroot", "nonce", "bits", "difficulty",
                               "chainwork", "previousblockhash", "nextblockhash"]
    assert "nextblockhash" not in listed[1]
    assert {k: listed[1][k] for k in ("size", "version", "merkleroot", "chainwork")} == {
        k: block[k] for k in ("size", "version", "merkleroot", "chainwork")}

    log.info("stream fields and item blockheight")
    info = seed.getstreaminfo("typed", True)
    assert info["salted"] is True and info["filters"] == []
    assert info["retrieve"] is True and info["canretrieve"] is True
    assert "items" in info["indexes"] and "keys" in info["indexes"]
    unsubscribed = joiner.getstreaminfo("typed")
    assert (unsubscribed["subscribed"], unsubscribed["retrieve"], unsubscribed["indexes"]) == (
        False, False, [])
    got = seed.getstreamitem("typed", item, True)
    assert got["blockheight"] == seed.getblock(got["blockhash"])["height"]
    assert seed.liststreamitems("typed")[0]["blockheight"] == got["blockheight"]

    log.info("verbose listpermissions names the admins who granted")
    listed = seed.listpermissions("admin", me, True) + seed.listpermissions("typed.write", me,
                                                                            True)
    assert len(listed) == 2
    for p in listed:
        assert p["admins"] == [me], p
    joiner_perm = seed.listpermissions("connect", joiner.getaddresses()[0], True)
    assert joiner_perm[0]["admins"] == [me]


def test_wallet_transactions_keys_messages_and_balances(harness):
    node = harness.start_node()
    me = node.getaddresses()[0]
    other = node.createkeypairs()[0]

    log.info("a grant to an outside address, then watch it with importaddress")
    grant = node.grant(other["address"], "send")
    node.wait_for_confirmation(grant)
    assert_raises_rpc_error(-5, None, node.listaddresstransactions, other["address"])
    node.importaddress(other["address"], "", True)
    assert {"address": other["address"], "ismine": False} in node.listaddresses()
    assert node.validateaddress(other["address"])["iswatchonly"] is True
    txs = node.listaddresstransactions(other["address"])
    assert [t["txid"] for t in txs] == [grant]
    assert txs[0]["myaddresses"] == [other["address"]] and txs[0]["addresses"] == [me]
    assert txs[0]["permissions"][0]["send"] is True
    assert txs[0]["permissions"][0]["addresses"] == [other["address"]]

    log.info("wallet transactions of this wallet: grant and publish, confirmations grow")
    node.wait_for_confirmation(node.create("stream", "w", True))
    pub = node.publish("w", "k", {"text": "hi"})
    listed = node.listwallettransactions(100)
    assert listed[-1]["txid"] == pub and listed[-1]["confirmations"] == 0
    node.wait_for_confirmation(pub)
    wtx = node.getwallettransaction(pub, False, True)
    assert list(wtx)[:6] == ["balance", "myaddresses", "addresses", "permissions", "items",
                             "data"]
    assert wtx["balance"] == {"amount": 0.0, "assets": []}
    assert wtx["items"][0]["keys"] == ["k"] and wtx["data"] == [{"text": "hi"}]
    assert wtx["confirmations"] >= 1 and wtx["valid"] is True
    assert wtx["vin"][0]["sender"] == me and wtx["vout"][0]["items"][0]["name"] == "w"
    assert node.getaddresstransaction(me, pub)["txid"] == pub
    assert_raises_rpc_error(-710, None, node.getwallettransaction, "ab" * 32)
    assert_raises_rpc_error(-710, None, node.getaddresstransaction, other["address"], pub)
    assert [t["txid"] for t in node.listwallettransactions(1, 1)] == [listed[-2]["txid"]]

    log.info("keys: importprivkey, dumpprivkey; messages: signmessage, verifymessage")
    node.importprivkey(other["privkey"])
    assert node.dumpprivkey(other["address"]) == other["privkey"]
    assert {"address": other["address"], "ismine": True} in node.listaddresses()
    assert_raises_rpc_error(-4, None, node.dumpprivkey, node.createkeypairs()[0]["address"])
    assert_raises_rpc_error(-5, None, node.importprivkey, "notakey")
    sig = node.signmessage(me, "hello chainmill")
    assert node.verifymessage(me, sig, "hello chainmill") is True
    assert node.verifymessage(me, sig, "hello chainmill!") is False
    assert node.verifymessage(other["address"], sig, "hello chainmill") is False
    assert node.signmessage(other["privkey"], "m") == node.signmessage(other["address"], "m")
    assert_raises_rpc_error(-5, None, node.verifymessage, me, "%%%", "x")

    log.info("raw transactions: decode, and submit one made elsewhere")
    raw = node.getrawtransaction(pub)
    decoded = node.decoderawtransaction(raw)
    assert decoded["txid"] == pub and "confirmations" not in decoded
    assert_raises_rpc_error(-22, None, node.decoderawtransaction, "00ff")
    assert_raises_rpc_error(-27, None, node.sendrawtransaction, raw)
    assert_raises_rpc_error(-22, None, node.sendrawtransaction, "zz")

    log.info("the rest: MultiChain's shapes, empty on a chain without a currency")
    assert node.getbalance() == 0.0 and node.listunspent() == []
    assert node.gettotalbalances() == [] and node.getaddressbalances(me) == []
    assert node.getmultibalances() == {"total": []}
    assert node.ping() is None
    tips = node.getchaintips()
    assert tips == [{"height": node.getblockcount(), "hash": node.getbestblockhash(),
                     "branchlen": 0, "status": "active"}]
    assert set(node.getnettotals()) == {"totalbytesrecv", "totalbytessent", "timemillis"}
    assert node.gettxoutsetinfo()["height"] == node.getblockcount()
    assert set(node.getchunkqueueinfo()) == {"chunks", "bytes"}
    assert set(node.getchunkqueuetotals()) == {"chunks", "bytes"}
    for name in ("getwallettransaction", "importaddress", "verifymessage", "ping",
                 "sendrawtransaction", "getmultibalances"):
        assert node.help(name).startswith(name)


def test_sendrawtransaction_of_a_transaction_signed_elsewhere(harness):
    seed, joiner = start_network(harness, 2)
    log.info("a transaction signed by another node of the chain is accepted")
    cut_link(seed, joiner)
    txid = seed.publish("root", "raw", "0102")
    raw = seed.getrawtransaction(txid)
    assert joiner.sendrawtransaction(raw, None) == txid
    assert txid in joiner.getrawmempool()

    log.info("a transaction of another chain does not verify here: -26, nothing pooled")
    other = harness.start_node()
    other.pause("mining")
    assert_raises_rpc_error(-26, None, other.sendrawtransaction, raw)
    assert other.getrawmempool() == []


# -- golden shapes of MultiChain 2.3's transaction JSON ----------------------------------------
# Where each shape comes from in MultiChain 2.3's source:
# - getrawtransaction verbose: getrawtransaction -> TxToJSON (rpcrawtransaction.cpp): hex,
#   txid, version, locktime, vin[{txid, vout, scriptSig{asm, hex}, sequence}], vout[{value,
#   n, scriptPubKey (ScriptPubKeyToJSON: asm, hex, reqSigs, type, addresses), assets,
#   permissions (PermissionEntries, rpcutils.cpp: for, flags, custom, startblock, endblock,
#   timestamp), items (the stream item entries of rpcutils.cpp)}], create, data, then
#   blockhash, confirmations, time, blocktime. chainmill adds vin sender/pubkey/nonce and
#   the trailing `final`.
# - getblock verbose 4: blockToJSON (rpcblockchain.cpp): hash, miner, confirmations, size,
#   height, version, merkleroot, tx[TxToJSON(tx, 0) + hex], time, nonce, bits, difficulty,
#   chainwork, previousblockhash (nextblockhash when not the tip).
GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, value: object) -> None:
    """`value` has the golden shape `name` (field names, order, nesting, types) and no integer
    a JavaScript client would round. CHAINMILL_WRITE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / f"{name}.json"
    if os.environ.get("CHAINMILL_WRITE_GOLDEN") == "1":
        path.write_text(json.dumps(shape(value), indent=1) + "\n")
    assert unsafe_integers(value) == [], name
    expected = json.loads(path.read_text())
    assert ordered_keys(shape(value)) == ordered_keys(expected), name
    assert shape(value) == expected, name


def test_transaction_json_matches_multichain_shapes(harness):
    node = harness.start_node()
    user = node.getnewaddress()
    kinds = {
        "create_stream": node.create("stream", "golden", {"restrict": "write",
                                                          "salted": False}),
        "grant_global": node.grant(user, "send,low1"),
    }
    node.wait_for_confirmation(*kinds.values())
    kinds["grant_stream"] = node.grant(user, "golden.write")
    kinds["publish"] = node.publish("golden", ["k1", "k2"], {"json": {"a": 1}})
    node.wait_for_confirmation(kinds["grant_stream"], kinds["publish"])
    # One more block, so that no block of interest is the tip (nextblockhash is present).
    node.wait_for_confirmation(node.publish("golden", "later", "00"))

    for kind, txid in kinds.items():
        log.info("%s: getrawtransaction verbose and getblock verbose 4", kind)
        tx = node.getrawtransaction(txid, 1)
        check_golden(f"getrawtransaction_{kind}", tx)
        block = node.getblock(tx["blockhash"], 4)
        mine = [t for t in block["tx"] if t["txid"] == txid]
        assert len(mine) == 1
        check_golden(f"getblock4_tx_{kind}", mine[0])
        check_golden("getblock4_header",
                     {k: v for k, v in block.items() if k != "tx"})
        assert mine[0]["hex"] == tx["hex"]
        assert tx["vin"][0]["scriptSig"]["hex"] and all(
            v["scriptPubKey"]["asm"] and v["scriptPubKey"]["hex"] for v in tx["vout"])

    log.info("field values, beyond shapes")
    grant = node.getrawtransaction(kinds["grant_global"], 1)["vout"][0]["permissions"][0]
    assert (grant["send"], grant["connect"], grant["custom"]) == (True, False, ["low1"])
    create = node.getrawtransaction(kinds["create_stream"], 1)["create"]
    assert (create["name"], create["salted"], create["restrict"]["write"]) == (
        "golden", False, True)
    assert create["streamref"] == node.getstreaminfo("golden")["streamref"]
