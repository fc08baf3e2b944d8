"""Node information and control: getinfo, params, runtime params, help, stop, pause, …"""

from __future__ import annotations

import logging
from typing import Any

from config.runtime import parse_setruntimeparam
from consensus.mining import mining_order
from ledger.errors import InvalidAddress
from node.rpc import help as rpc_help
from node.rpc.dispatch import MethodTable
from node.rpc.errors import (
    RPC_GENERAL_FILE_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RpcError,
)
from node.rpc.methods import register
from node.rpc.params import as_bool, given

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 20013
NODE_VERSION = 100901
STOP_MESSAGE = "chainmill server stopping"

RUNTIME_SHOWN = (
    "port", "reindex", "rescan", "txindex", "autocombineminconf", "autocombinemininputs",
    "autocombinemaxinputs", "autocombinedelay", "autocombinesuspend", "autosubscribe",
    "handshakelocal", "bantx", "lockblock", "hideknownopdrops", "maxshowndata",
    "maxqueryscanitems", "v1apicompatible", "miningrequirespeers", "mineemptyrounds",
    "miningturnover", "lockadminminerounds", "gen", "genproclimit", "lockinlinemetadata",
    "acceptfiltertimeout", "sendfiltertimeout",
)
"""getruntimeparams keys, in MultiChain 2.3's order (getruntimeparams in rpcmisc.cpp)."""
RUNTIME_FIXED = {
    # MultiChain's defaults for what chainmill has no use for (no native currency to
    # combine, no filters, one mining thread); shown so typed clients find every key.
    "autocombineminconf": 1, "autocombinemininputs": 50, "autocombinemaxinputs": 100,
    "autocombinedelay": 1, "autocombinesuspend": 15, "bantx": "", "lockblock": "",
    "genproclimit": 1, "lockinlinemetadata": True, "acceptfiltertimeout": 1000,
    "sendfiltertimeout": 10000, "mineemptyblocks": True, "mineblocksondemand": False,
}
TASKS = ("incoming", "mining", "offchain")


def _bad(msg: str) -> RpcError:
    return RpcError(RPC_INVALID_PARAMETER, msg)


def runtime_value(ctx: Any, name: str) -> Any:
    """Effective value of a runtime parameter, falling back to the chain's defaults."""
    param_default = {"miningturnover": "mining-turnover", "mineemptyrounds": "mine-empty-rounds",
                     "miningrequirespeers": "mining-requires-peers",
                     "lockadminminerounds": "lock-admin-mine-rounds"}
    if name == "port":
        return ctx.network.port if ctx.network is not None else ctx.params["default-network-port"]
    if name in ctx.settings:
        v = ctx.settings[name]
    elif hasattr(ctx.runtime, name):
        v = getattr(ctx.runtime, name)
    else:
        v = RUNTIME_FIXED.get(name)
    if v is None and name in param_default:
        v = ctx.params[param_default[name]]
    if v is None and name == "handshakelocal":
        v = ctx.codec.encode(ctx.wallet.default.pubkey_hash)
    if isinstance(v, tuple):
        v = ",".join(str(x) for x in v)
    return v


def register_methods(table: MethodTable, ctx: Any) -> None:
    def getinfo(p: list) -> dict:
        net = ctx.network
        port = net.port if net is not None else ctx.params["default-network-port"]
        return {
            "version": ctx.version, "nodeversion": NODE_VERSION, "edition": "Community",
            "protocolversion": PROTOCOL_VERSION, "chainname": ctx.chain_name,
            "description": ctx.params["chain-description"], "protocol": "multichain",
            "port": port, "setupblocks": ctx.params["setup-first-blocks"],
            "nodeaddress": f"{ctx.chain_name}@127.0.0.1:{port}",
            "burnaddress": ctx.codec.encode(bytes(20)),
            "incomingpaused": "incoming" in ctx.paused, "miningpaused": "mining" in ctx.paused,
            "offchainpaused": "offchain" in ctx.paused,
            "walletversion": 60000, "balance": 0.0, "walletdbversion": 3,
            "reindex": bool(ctx.runtime.reindex), "blocks": ctx.chain.height,
            "chainrewards": 0.0, "assets": 0, "streams": len(ctx.chain.state.streams),
            "timeoffset": 0, "connections": net.connection_count() if net is not None else 0,
            "proxy": "", "difficulty": 6e-08,
            "testnet": bool(ctx.params["chain-is-testnet"]),
            "keypoololdest": int(ctx.started), "keypoolsize": len(ctx.wallet),
            "paytxfee": 0.0, "relayfee": 0.0, "errors": "",
            "finaldepth": ctx.chain.final_depth(),
        }

    def getblockchainparams(p: list) -> dict:
        display = as_bool(p[0], "display-names") if given(p, 0) else True
        if given(p, 1):
            as_bool(p[1], "with-upgrades")
        shown = ctx.params.as_display() if display else ctx.params.as_compact()
        # MultiChain 2.3 lists minimum-block-txs after mining-turnover; chainmill mines
        # whenever it may, so its value is MultiChain's default, 0.
        turnover = "mining-turnover" if display else "miningturnover"
        out: dict[str, Any] = {}
        for name, value in shown.items():
            out[name] = value
            if name == turnover:
                out["minimum-block-txs" if display else "minimumblocktxs"] = 0
        return out

    def getruntimeparams(p: list) -> dict:
        return {n: runtime_value(ctx, n) for n in RUNTIME_SHOWN}

    def setruntimeparam(p: list) -> None:
        name, value = p[0], p[1]
        if not isinstance(name, str):
            raise _bad("parameter-name should be a string")
        v = parse_setruntimeparam(name, value)  # ConfigError -> -8, nothing changed
        if name == "handshakelocal":
            try:
                ctx.codec.decode(v)
            except InvalidAddress:
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid address") from None
        settings = {**ctx.settings, name: v}
        if ctx.runtime.storeruntimeparams:
            # Stored before it is applied, so a failed write leaves the old value in force.
            try:
                path = ctx.chain_dir / "setruntimeparam.conf"
                lines = [f"{k}={','.join(map(str, x)) if isinstance(x, tuple) else x}"
                         for k, x in settings.items()]
                path.write_text("\n".join(lines) + "\n")
                path.chmod(0o600)
            except OSError as e:
                raise RpcError(RPC_GENERAL_FILE_ERROR,
                               f"Cannot store new parameter value permanently: {e}") from None
        ctx.settings[name] = v
        if ctx.miner is not None:
            if name == "miningturnover":
                ctx.miner.turnover = v
            elif name == "mineemptyrounds":
                ctx.miner.empty_rounds = v
            elif name == "miningrequirespeers":
                ctx.miner.requires_peers = v

    def help_(p: list) -> str:
        if not p:
            return rpc_help.help_overview(table.names())
        name = p[0]
        if not isinstance(name, str) or name not in table.names():
            return rpc_help.unknown_command(str(name))
        return table.help_text(name)

    def stop(p: list) -> str:
        log.info("stop requested over JSON-RPC")
        ctx.stopping.set()
        return STOP_MESSAGE

    def getinitstatus(p: list) -> dict:
        return {"version": ctx.version, "nodeversion": NODE_VERSION, "initialized": True}

    def getblockchaininfo(p: list) -> dict:
        tip = ctx.chain.height
        return {
            "chain": "test" if ctx.params["chain-is-testnet"] else "main",
            "chainname": ctx.chain_name, "description": ctx.params["chain-description"],
            "protocol": "multichain", "setupblocks": ctx.params["setup-first-blocks"],
            "reindex": bool(ctx.runtime.reindex), "blocks": tip, "headers": tip,
            "bestblockhash": ctx.hash_at(tip), "difficulty": 6e-08,
            "verificationprogress": 1.0, "chainwork": f"{tip + 1:064x}", "chainrewards": 0.0,
            "finaldepth": ctx.chain.final_depth(),
        }

    def getmininginfo(p: list) -> dict:
        return {
            "blocks": ctx.chain.height, "currentblocksize": 0, "currentblocktx": 0,
            "difficulty": 6e-08, "errors": "", "generate": bool(ctx.runtime.gen),
            "genproclimit": 1, "networkhashps": 0, "hashespersec": 0,
            "pooledtx": len(ctx.mempool),
            "testnet": bool(ctx.params["chain-is-testnet"]),
            "chain": "test" if ctx.params["chain-is-testnet"] else "main",
            **next_miners(),
        }

    def next_miners() -> dict[str, Any]:
        """Extension fields: whose turn it is to sign the next block. The eligible miners in
        the order they try (the miner's own ranking, with this node's mining turnover), so
        the first one signs it unless it is offline."""
        # One state object: its height and tip hash belong together (the chain's
        # tip_header is assigned apart from it when a block connects in another thread).
        state = ctx.chain.state
        turnover = float(ctx.setting("miningturnover"))
        if state.height < 0:
            return {"nextblock": 0, "nextminers": [], "miningturnover": turnover}
        mine = tuple(k.pubkey_hash for k in ctx.wallet.keys())
        order = mining_order(state, ctx.chain.rules, state.height + 1, state.tip_hash,
                             turnover, mine)
        return {"nextblock": state.height + 1,
                "nextminers": [ctx.codec.encode(a) for a in order], "miningturnover": turnover}

    def _tasks(value: Any) -> list[str]:
        if not isinstance(value, str):
            raise _bad("tasks should be a comma-delimited string")
        tasks = [t.strip() for t in value.split(",") if t.strip()]
        if not tasks or any(t not in TASKS for t in tasks):
            raise _bad(f"Invalid task; use one or more of {', '.join(TASKS)}")
        return tasks

    def pause(p: list) -> str:
        for t in _tasks(p[0]):
            ctx.paused.add(t)
        if ctx.miner is not None:
            ctx.miner.paused = "mining" in ctx.paused
        return "Paused"

    def resume(p: list) -> str:
        for t in _tasks(p[0]):
            ctx.paused.discard(t)
        if ctx.miner is not None:
            ctx.miner.paused = "mining" in ctx.paused
            ctx.miner.notify_tx()
        return "Resumed"

    for name, fn, warm in [
        ("getinfo", getinfo, False), ("getblockchainparams", getblockchainparams, False),
        ("getruntimeparams", getruntimeparams, False), ("setruntimeparam", setruntimeparam, False),
        ("help", help_, True), ("stop", stop, True), ("getinitstatus", getinitstatus, True),
        ("getblockchaininfo", getblockchaininfo, False), ("getmininginfo", getmininginfo, False),
        ("pause", pause, False), ("resume", resume, False),
    ]:
        register(table, name, fn, warmup_ok=warm)
