"""Network methods: getpeerinfo, addnode, getaddednodeinfo, getconnectioncount, getnetworkinfo.

They read the node's peer manager (`ctx.network`); a node started without networking has no
peers and says so truthfully (empty lists, zero connections).
"""

from __future__ import annotations

import time
from typing import Any

from node.rpc.dispatch import MethodTable
from node.rpc.errors import (
    RPC_CLIENT_NODE_NOT_ADDED,
    RPC_CLIENT_NODE_NOT_CONNECTED,
    RPC_INVALID_PARAMETER,
    RPC_NOT_SUPPORTED,
    RpcError,
)
from node.rpc.methods import register
from node.rpc.methods.control import PROTOCOL_VERSION
from node.rpc.params import given


def register_methods(table: MethodTable, ctx: Any) -> None:
    def getpeerinfo(p: list) -> list:
        if ctx.network is None:
            return []
        peers = {peer.id: peer for peer in ctx.network.ready_peers()}
        out = ctx.network.peer_info()
        for info in out:
            peer = peers.get(info["id"])
            # MultiChain 2.3's fields; `encrypted` is set by the P2P layer when it encrypts.
            info.setdefault("encrypted", bool(getattr(peer, "encrypted", False)))
            info.setdefault("whitelisted", False)
        return out

    def getconnectioncount(p: list) -> int:
        return ctx.network.connection_count() if ctx.network is not None else 0

    def addnode(p: list) -> None:
        node, command = p[0], p[1]
        if not isinstance(node, str) or command not in ("add", "remove", "onetry"):
            raise RpcError(RPC_INVALID_PARAMETER, "addnode takes ip:port and add|remove|onetry")
        if ctx.network is None:
            raise RpcError(RPC_NOT_SUPPORTED, "Networking is off on this node (offline)")
        ctx.network.addnode(node, command)

    def disconnectnode(p: list) -> None:
        if not isinstance(p[0], str):
            raise RpcError(RPC_INVALID_PARAMETER, "node should be a string")
        if ctx.network is None or not ctx.network.disconnect(p[0]):
            raise RpcError(RPC_CLIENT_NODE_NOT_CONNECTED, "Node not found in connected nodes")

    def getaddednodeinfo(p: list) -> list:
        if given(p, 1) and not isinstance(p[1], str):
            raise RpcError(RPC_INVALID_PARAMETER, "node should be a string")
        infos = ctx.network.added_node_info() if ctx.network is not None else []
        if given(p, 1):
            infos = [i for i in infos if i["addednode"] == p[1]]
            if not infos:
                raise RpcError(RPC_CLIENT_NODE_NOT_ADDED, "Error: Node has not been added.")
        return infos

    def getnetworkinfo(p: list) -> dict:
        net = ctx.network
        return {
            "version": 100901, "subversion": f"/chainmill:{ctx.version}/",
            "protocolversion": PROTOCOL_VERSION, "localservices": "0000000000000001",
            "timeoffset": 0,
            "connections": net.connection_count() if net is not None else 0,
            "networks": [{"name": "ipv4", "limited": False, "reachable": True, "proxy": ""}],
            "relayfee": 0.0,
            "localaddresses": ([{"address": "127.0.0.1", "port": net.port, "score": 1}]
                               if net is not None else []),
        }

    def ping(p: list) -> None:
        # chainmill measures pingtime on its own keep-alive schedule; nothing to queue.
        return None

    def getnettotals(p: list) -> dict:
        peers = ctx.network.peer_info() if ctx.network is not None else []
        return {"totalbytesrecv": sum(int(x["bytesrecv"]) for x in peers),
                "totalbytessent": sum(int(x["bytessent"]) for x in peers),
                "timemillis": int(time.time() * 1000)}

    for name, fn in [("ping", ping), ("getnettotals", getnettotals),
                     ("getpeerinfo", getpeerinfo), ("getconnectioncount", getconnectioncount),
                     ("addnode", addnode), ("getaddednodeinfo", getaddednodeinfo),
                     ("disconnectnode", disconnectnode),
                     ("getnetworkinfo", getnetworkinfo)]:
        register(table, name, fn)
