"""Third-party MultiChain client libraries drive a real chainmill node over every method.

What: mcrpc (typed method signatures, and typed response classes that fail on a missing key:
getinfo, getruntimeparams, getmininginfo, getwalletinfo, getblockchaininfo, ...) calls every
method chainmill implements as a MultiChain 2.3 program would; Savoir (a catch-all client that
sends `chain_name` and JSON-RPC 1.1 envelopes) calls the rest and a sample of the common
ones. Both are installed from PyPI by the test extras; nothing is mocked.

How: two nodes of one chain (so the peer and added-node methods have something to show);
every call goes through the library's own HTTP code to the seed node.
"""

from __future__ import annotations

import logging

import pytest
from mcrpc import RpcClient
from mcrpc.exceptions import RpcError as McrpcError
from mcrpc.responses import (
    Getblockchaininfo,
    Getchunkqueueinfo,
    Getchunkqueuetotals,
    Getinfo,
    Getinitstatus,
    Getmempoolinfo,
    Getmininginfo,
    Getnettotals,
    Getnetworkinfo,
    Getruntimeparams,
    Gettxoutsetinfo,
    Getwalletinfo,
)
from network_support import start_network
from Savoir import Savoir

from node.rpc.help import HELP

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_clients")


def test_every_method_through_mcrpc_and_savoir(harness):
    seed, joiner = start_network(harness, 2)
    mc = RpcClient("127.0.0.1", str(seed.rpcport), seed.rpcuser, seed.rpcpassword)
    sv = Savoir(seed.rpcuser, seed.rpcpassword, "127.0.0.1", str(seed.rpcport), seed.chain)
    called: set[str] = set()

    def call(name: str, *args):
        called.add(name)
        return getattr(mc, name)(*args)

    log.info("typed responses: every required key is there")
    for name, cls in [("getinfo", Getinfo), ("getruntimeparams", Getruntimeparams),
                      ("getmininginfo", Getmininginfo), ("getwalletinfo", Getwalletinfo),
                      ("getblockchaininfo", Getblockchaininfo),
                      ("getmempoolinfo", Getmempoolinfo), ("getnetworkinfo", Getnetworkinfo),
                      ("getinitstatus", Getinitstatus), ("gettxoutsetinfo", Gettxoutsetinfo),
                      ("getnettotals", Getnettotals), ("getchunkqueueinfo", Getchunkqueueinfo),
                      ("getchunkqueuetotals", Getchunkqueuetotals)]:
        assert isinstance(call(name), cls), name
    assert call("getinfo").chainname == seed.chain

    log.info("wallet and addresses")
    me = call("getaddresses")[0]
    user = call("getnewaddress")
    assert call("validateaddress", user)["isvalid"] is True
    pair = call("createkeypairs", 1)[0]
    call("importaddress", pair["address"], "", False)
    assert any(a["address"] == pair["address"] for a in call("listaddresses", "*", True))
    sig = call("signmessage", me, "typed")
    assert call("verifymessage", me, sig, "typed") is True
    wif = call("dumpprivkey", user)
    call("importprivkey", wif)
    assert call("getbalance") == 0
    assert call("listunspent") == [] and call("gettotalbalances") == []
    assert call("getaddressbalances", me) == [] and "total" in call("getmultibalances")

    log.info("permissions, through the library's optional parameters")
    txid = call("grant", user, "send", 0, 0, 4294967295)
    seed.wait_for_confirmation(txid)
    assert call("verifypermission", user, "send") is True
    assert call("listpermissions", "send", user, True)[0]["admins"] == [me]
    seed.wait_for_confirmation(call("grantfrom", me, user, "receive"))
    seed.wait_for_confirmation(call("revokefrom", me, user, "receive"))
    seed.wait_for_confirmation(call("revoke", user, "send"))

    log.info("streams")
    seed.wait_for_confirmation(call("create", "stream", "lib", True))
    seed.wait_for_confirmation(call("createfrom", me, "stream", "lib2", {"restrict": "write"}))
    call("subscribe", "lib2")
    call("unsubscribe", "lib2")
    call("subscribe", "lib2", False)
    one = call("publish", "lib", "k1", {"text": "one"})
    two = call("publishfrom", me, "lib", ["k1", "k2"], "00ff")
    multi = call("publishmulti", "lib", [{"key": "m", "data": "01"}, {"key": "n", "data": "02"}])
    call("publishmultifrom", me, "lib2", [{"key": "p", "data": {"json": [1]}}])
    seed.wait_for_confirmation(one, two, multi)
    assert [s["name"] for s in call("liststreams")][:3] == ["root", "lib", "lib2"]
    info = call("getstreaminfo", "lib", True)
    assert info["salted"] is False and info["retrieve"] is True
    assert len(call("liststreamitems", "lib", True, 10)) == 4
    assert len(call("liststreamkeyitems", "lib", "k1")) == 2
    assert len(call("liststreampublisheritems", "lib", me)) == 4
    assert {k["key"] for k in call("liststreamkeys", "lib")} == {"k1", "k2", "m", "n"}
    assert call("liststreampublishers", "lib")[0]["publisher"] == me
    assert call("getstreamitem", "lib", one)["data"] == {"text": "one"}
    assert len(call("liststreamtxitems", "lib", [multi])) == 2
    assert len(call("liststreamqueryitems", "lib", {"keys": ["k1", "k2"]})) == 1
    height = call("getstreamitem", "lib", two, True)["blockheight"]
    assert two in [i["txid"] for i in call("liststreamblockitems", "lib", height)]
    assert call("gettxoutdata", two, 0) == "00ff"

    log.info("blocks, transactions and wallet transactions")
    tip = call("getblockcount")
    assert call("getblockhash", tip) == call("getbestblockhash")
    assert call("getblock", tip, 4)["chainwork"]
    assert call("listblocks", f"{tip - 1}-{tip}", True)[0]["chainwork"]
    assert call("getlastblockinfo", 0)["height"] == tip
    assert call("getchaintips")[0]["status"] == "active"
    raw = call("getrawtransaction", one)
    assert call("getrawtransaction", one, 1)["vin"][0]["scriptSig"]["hex"]
    assert call("decoderawtransaction", raw)["txid"] == one
    with pytest.raises(McrpcError):
        call("sendrawtransaction", raw)  # already in the chain: -27
    assert isinstance(call("getrawmempool"), list)
    assert isinstance(call("getrawmempool", True), dict)
    assert call("getwallettransaction", one, False, True)["txid"] == one
    assert one in [t["txid"] for t in call("listwallettransactions", 100)]
    assert one in [t["txid"] for t in call("listaddresstransactions", me, 100)]
    assert call("getaddresstransaction", me, one)["txid"] == one

    log.info("network and control")
    peers = call("getpeerinfo")
    assert peers and "encrypted" in peers[0] and "whitelisted" in peers[0]
    assert call("getconnectioncount") >= 1
    added = f"127.0.0.1:{joiner.port}"
    assert call("getaddednodeinfo", True, added)[0]["addednode"] == added
    call("addnode", "127.0.0.1:1", "onetry")
    call("ping")
    call("setruntimeparam", "maxshowndata", 20)
    assert call("getruntimeparams").maxshowndata == 20
    assert call("getblockchainparams")["minimum-block-txs"] == 0
    call("pause", "mining")
    call("resume", "mining")
    assert call("help", "getinfo").startswith("getinfo")

    log.info("Savoir: the catch-all client, with chain_name in every request")
    assert sv.getinfo()["chainname"] == seed.chain
    assert sv.getblockcount() == call("getblockcount")
    assert sv.liststreamitems("lib", False, 1)[0]["txid"]
    assert sv.grant(user, "send", None, None, None)  # nulls as an optional-less client sends
    assert sv.listwallettransactions(1)[0]["balance"] == {"amount": 0.0, "assets": []}
    error = sv.disconnectnode("127.0.0.1:1")  # Savoir returns the error envelope as is
    assert error["error"]["code"] == -29
    called.add("disconnectnode")

    log.info("stop, through the library, ends the node")
    assert call("stop")
    seed.wait_for_exit()
    assert set(HELP) - called == set()
