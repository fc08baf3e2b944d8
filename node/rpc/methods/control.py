"""Node information and control: getinfo, params, runtime params, help, stop, pause, …"""

from __future__ import annotations

import logging
from typing import Any

from node.rpc import help as rpc_help
from node.rpc.dispatch import MethodTable
from node.rpc.errors import RPC_GENERAL_FILE_ERROR, RPC_INVALID_PARAMETER, RpcError
from node.rpc.methods import register
from node.rpc.params import as_bool, as_bool_lenient, given

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 20013
NODE_VERSION = 100901
STOP_MESSAGE = "chainmill server stopping"

RUNTIME_SHOWN = (
    "port", "reindex", "rescan", "txindex", "autosubscribe", "handshakelocal",
    "hideknownopdrops", "maxshowndata", "maxqueryscanitems", "v1apicompatible",
    "miningrequirespeers", "mineemptyrounds", "miningturnover", "lockadminminerounds", "gen",
)
SETTABLE = {
    "miningrequirespeers": "bool", "mineemptyrounds": "float", "miningturnover": "fraction",
    "lockadminminerounds": "int", "maxshowndata": "int", "maxqueryscanitems": "int",
    "autosubscribe": "str", "handshakelocal": "str", "hideknownopdrops": "bool",
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
    v = ctx.setting(name) if hasattr(ctx.runtime, name) or name in ctx.settings else None
    if v is None and name in param_default:
        v = ctx.params[param_default[name]]
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
        return ctx.params.as_display() if display else ctx.params.as_compact()

    def getruntimeparams(p: list) -> dict:
        return {n: runtime_value(ctx, n) for n in RUNTIME_SHOWN}

    def setruntimeparam(p: list) -> None:
        name, value = p[0], p[1]
        kind = SETTABLE.get(name) if isinstance(name, str) else None
        if kind is None:
            raise _bad(f"Unsupported runtime parameter: {name}")
        if kind == "bool":
            v: Any = as_bool_lenient(value, name)
        elif kind in ("float", "fraction"):
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise _bad(f"{name} should be a number") from None
            if kind == "fraction" and not 0 <= v <= 1:
                raise _bad(f"{name} should be between 0 and 1")
        elif kind == "int":
            try:
                v = int(value)
            except (TypeError, ValueError):
                raise _bad(f"{name} should be an integer") from None
        else:
            v = str(value)
            if name == "autosubscribe":
                v = tuple(x.strip() for x in v.split(",") if x.strip())
        ctx.settings[name] = v
        if ctx.miner is not None:
            if name == "miningturnover":
                ctx.miner.turnover = v
            elif name == "mineemptyrounds":
                ctx.miner.empty_rounds = v
            elif name == "miningrequirespeers":
                ctx.miner.requires_peers = v
        if ctx.runtime.storeruntimeparams:
            try:
                path = ctx.chain_dir / "setruntimeparam.conf"
                lines = [f"{k}={','.join(map(str, x)) if isinstance(x, tuple) else x}"
                         for k, x in ctx.settings.items()]
                path.write_text("\n".join(lines) + "\n")
                path.chmod(0o600)
            except OSError as e:
                raise RpcError(RPC_GENERAL_FILE_ERROR, f"Cannot store runtime parameters: {e}"
                               ) from None

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
            "genproclimit": 1, "hashespersec": 0, "pooledtx": len(ctx.mempool),
            "testnet": bool(ctx.params["chain-is-testnet"]),
            "chain": "test" if ctx.params["chain-is-testnet"] else "main",
        }

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
