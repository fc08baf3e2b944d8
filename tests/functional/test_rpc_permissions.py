"""Permissions denied, then granted, then revoked, over JSON-RPC on a real node.

What: a fresh wallet address cannot publish (-704) until `send` is granted; a closed stream
also needs `<stream>.write`; revoke takes a permission away again; listpermissions shows and
omits entries accordingly; grantfrom by an address without the authority fails with -704,
and from an address outside the wallet with -709, both changing nothing.

How: one node whose genesis address is the only admin; every grant and revoke is waited for
until confirmed before its effect is asserted.
"""

from __future__ import annotations

import logging

import pytest
from framework import assert_raises_rpc_error

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_permissions")

RPC_INSUFFICIENT_PERMISSIONS = -704
RPC_WALLET_ADDRESS_NOT_FOUND = -709


def granted(node, perms: str, address: str) -> list[tuple]:
    """(type, stream name or None) of each listed permission of `address`."""
    return sorted((p["type"], p["for"]["name"] if p["for"] else None)
                  for p in node.listpermissions(perms, address))


def test_publish_denied_until_granted_and_again_after_revoke(harness):
    node = harness.start_node()
    node.create("stream", "open", True)
    closed = node.create("stream", "closed", False)
    node.wait_for_confirmation(closed)

    log.info("a new address has no permissions")
    user = node.getnewaddress()
    assert node.listpermissions("*", user) == []
    assert node.verifypermission(user, "send") is False
    for stream in ("open", "closed"):
        assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.publishfrom, user,
                                stream, "k", {"text": "denied"})

    log.info("grant send: the open stream accepts the address, the closed one does not")
    node.wait_for_confirmation(node.grant(user, "send"))
    assert granted(node, "*", user) == [("send", None)]
    assert node.verifypermission(user, "send") is True
    txid = node.publishfrom(user, "open", "k", {"text": "allowed"})
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.publishfrom, user,
                            "closed", "k", {"text": "denied"})

    log.info("grant closed.write: now the closed stream accepts it too")
    node.wait_for_confirmation(node.grant(user, "closed.write"))
    assert granted(node, "closed.*", user) == [("write", "closed")]
    assert granted(node, "*", user) == [("send", None), ("write", "closed")]
    txid2 = node.publishfrom(user, "closed", "k", {"text": "allowed"})
    node.wait_for_confirmation(txid, txid2)
    assert node.liststreampublisheritems("closed", user)[0]["txid"] == txid2

    log.info("revoke closed.write: the closed stream refuses it again, listpermissions omits it")
    node.wait_for_confirmation(node.revoke(user, "closed.write"))
    assert granted(node, "*", user) == [("send", None)]
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.publishfrom, user,
                            "closed", "k", {"text": "denied"})
    node.publishfrom(user, "open", "k", {"text": "still allowed"})

    log.info("revoke send: nothing can be published from the address")
    node.wait_for_confirmation(node.revoke(user, "send"))
    assert node.listpermissions("*", user) == []
    assert node.verifypermission(user, "send") is False
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.publishfrom, user,
                            "open", "k", {"text": "denied"})


def test_grant_needs_authority_and_a_wallet_address(harness):
    node = harness.start_node()
    admin = node.getaddresses()[0]
    clerk = node.getnewaddress()
    newcomer = node.getnewaddress()
    node.wait_for_confirmation(node.grant(clerk, "send"))
    streams_before = node.liststreams()
    perms_before = node.listpermissions()
    mempool_before = node.getmempoolinfo()

    log.info("grantfrom by an address with send but neither activate nor admin: -704")
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.grantfrom, clerk,
                            newcomer, "send")
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.grantfrom, clerk,
                            newcomer, "admin")
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.revokefrom, clerk,
                            admin, "send")

    log.info("grantfrom by an address outside this wallet: -709")
    outsider = node.createkeypairs()[0]["address"]
    assert node.validateaddress(outsider)["ismine"] is False
    assert_raises_rpc_error(RPC_WALLET_ADDRESS_NOT_FOUND, None, node.grantfrom, outsider,
                            newcomer, "send")

    log.info("creating a stream without create permission: -704")
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.createfrom, clerk,
                            "stream", "nope", True)

    log.info("the failed calls changed nothing")
    assert node.getmempoolinfo() == mempool_before
    assert node.listpermissions() == perms_before
    assert node.liststreams() == streams_before

    log.info("an admin grants activate; then the clerk may grant low-risk permissions")
    node.wait_for_confirmation(node.grantfrom(admin, clerk, "activate"))
    node.wait_for_confirmation(node.grantfrom(clerk, newcomer, "send,connect"))
    assert granted(node, "*", newcomer) == [("connect", None), ("send", None)]
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, node.grantfrom, clerk,
                            newcomer, "create")
