"""The functional harness itself: a node whose RPC port another node took meanwhile is
started again on fresh ports (the suite runs many nodes at once; free_port cannot reserve)."""

from __future__ import annotations


def test_a_node_whose_rpc_port_another_node_holds_starts_on_fresh_ports(harness) -> None:
    first = harness.add_node(chain="holder")
    first.start()
    second = harness.add_node(chain="clash")
    second.rpcport = first.rpcport  # as if another test's node had bound it first
    second.start()
    assert second.rpcport != first.rpcport
    assert second.rpc.call("getinfo")["chainname"] == "clash"
    assert first.rpc.call("getinfo")["chainname"] == "holder"
