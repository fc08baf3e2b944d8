"""The composition root: builds store, chain, wallet, mempool, miner, hooks and RPC for one
chain, runs them in one task group, and shuts down cleanly on `stop`, SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from config import paths
from config.errors import ConfigError
from config.params import ChainParams, params_hash, read_params_file, write_params_file
from config.runtime import ensure_chain_conf, load_runtime_config, runtime_defaults
from ledger.addresses import AddressCodec
from ledger.blocks import Block
from ledger.errors import ChainmillError, StoreError
from ledger.store import ChainStore
from ledger.transactions import RESTRICT_WRITE, CreateStream, Transaction
from ledger.types import ZERO_HASH
from node.chain import Chain, now_ms
from node.context import NodeContext
from node.hooks import HookRunner
from node.mempool import Mempool
from node.miner import Miner
from node.p2p.network import Network
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.methods import register_all
from node.rpc.server import RpcSettings, start_rpc_server
from node.wallet import WALLET_FILE, Wallet

log = logging.getLogger(__name__)

VERSION = "0.1.0"
PID_FILE = "chainmill.pid"
STORE_FILE = "chain.db"
PENDING_PARAMS = "params.dat.new"
MEMPOOL_FILE = "mempool.dat"


def save_mempool(ctx: NodeContext) -> int:
    """Keep unconfirmed transactions across a clean restart (as Bitcoin Core's mempool.dat)."""
    raws = [e.tx.raw.hex() for e in ctx.mempool.entries.values()]
    path = ctx.chain_dir / MEMPOOL_FILE
    if raws:
        paths.write_private_file(path, "\n".join(raws) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return len(raws)


def load_mempool(ctx: NodeContext) -> tuple[int, int]:
    """Re-admit saved transactions; each is validated again, as if it had just arrived."""
    path = ctx.chain_dir / MEMPOOL_FILE
    if not path.exists():
        return 0, 0
    ok = bad = 0
    for line in path.read_text().split():
        try:
            ctx.mempool.add(Transaction.decode(bytes.fromhex(line)), verified=False)
            ok += 1
        except (ChainmillError, ValueError) as e:
            log.info("saved transaction not re-admitted: %s", e)
            bad += 1
    path.unlink()
    return ok, bad


def codec_for(params: Mapping) -> AddressCodec:
    return AddressCodec(params["address-pubkeyhash-version"], params["private-key-version"],
                        params["address-checksum-value"])


def store_url(chain_dir: Path, db_url: str | None) -> str:
    return db_url or f"sqlite:///{chain_dir / STORE_FILE}"


class PidFile:
    """`chainmill.pid` in the chain directory while the node runs; a stale one (its process
    is gone, e.g. after SIGKILL) is replaced without manual repair."""

    def __init__(self, chain_dir: Path) -> None:
        self.path = chain_dir / PID_FILE

    def running_pid(self) -> int | None:
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def acquire(self) -> None:
        other = self.running_pid()
        if other is not None:
            raise ConfigError(f"the node of this chain is already running (pid {other})")
        paths.write_private_file(self.path, f"{os.getpid()}\n")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()


def load_chain_files(datadir: Path, chain: str) -> tuple[Path, ChainParams]:
    cdir = paths.chain_dir(datadir, chain)
    pfile = cdir / paths.PARAMS_FILE
    if not pfile.exists():
        raise ConfigError(f"no chain named {chain} in {datadir}: create it first with "
                          f"`chainmill create {chain}`")
    return cdir, read_params_file(pfile)


class NodeApp:
    def __init__(self, datadir: Path, chain_name: str, cli: Mapping[str, Any],
                 environ: Mapping[str, str] = os.environ,
                 announce: Callable[[str], None] = lambda line: None) -> None:
        self.datadir = datadir
        self.chain_name = chain_name
        self.cli = dict(cli)
        self.environ = environ
        self.announce = announce
        self.ctx: NodeContext | None = None

    # -- start-up -----------------------------------------------------------------------------
    def _open(self) -> tuple[NodeContext, Any]:
        cdir, params = load_chain_files(self.datadir, self.chain_name)
        ensure_chain_conf(cdir)
        runtime = load_runtime_config(self.datadir, self.chain_name, cli=self.cli,
                                      environ=self.environ, defaults=runtime_defaults(params))
        codec = codec_for(params)
        wallet = Wallet(cdir / WALLET_FILE, codec)
        if len(wallet) == 0:
            if runtime.initprivkey:
                wallet.import_key(codec.decode_wif(runtime.initprivkey))
            else:
                wallet.new_key()
        pending = cdir / PENDING_PARAMS
        if not params.locked:
            params = self._genesis(cdir, params, codec, wallet, runtime)
        elif pending.exists():
            pending.unlink()
        if params_hash(params) != params["chain-params-hash"]:
            raise ConfigError(f"{cdir / paths.PARAMS_FILE} was edited after the chain started; "
                              "restore the original parameters")
        store = ChainStore(store_url(cdir, runtime.db_url))
        known = store.get_meta("genesis-hash")
        if known is None:
            store.set_meta("genesis-hash", params["genesis-hash"].hex())
        elif known != params["genesis-hash"].hex():
            raise StoreError("the chain store belongs to another chain (genesis differs)")
        chain = Chain(store, params, codec)
        if runtime.reindex or chain.reindex_pending():
            log.info("reindexing the chain store from its blocks")
            chain.reindex(quarantine=cdir)
        if chain.height < 0 and not (runtime.addnode or runtime.connect):
            raise StoreError("the chain store has no genesis block and no peer to fetch it "
                             "from (start with CHAIN@HOST:PORT to join)")
        hooks = HookRunner(walletnotify=runtime.walletnotify,
                           walletnotifynew=runtime.walletnotifynew,
                           blocknotify=runtime.blocknotify, timeout=runtime.hooktimeout)
        ctx = NodeContext(chain_name=self.chain_name, chain_dir=cdir, params=params,
                          runtime=runtime, chain=chain, mempool=Mempool(chain), wallet=wallet,
                          hooks=hooks, codec=codec, version=VERSION)
        return ctx, runtime

    def _genesis(self, cdir: Path, params: ChainParams, codec: AddressCodec, wallet: Wallet,
                 runtime: Any) -> ChainParams:
        """First start: fix the parameters, build and store the genesis block, lock params.dat.

        Order for crash safety: the locked parameters go to a side file, the block to the
        store, then the side file replaces params.dat. A crash before the rename leaves
        params.dat editable and the store is rebuilt from scratch on the next start.
        """
        key = wallet.default
        now = now_ms()
        fixed = params.replace({
            "genesis-pubkey": key.pubkey, "genesis-version": 1,
            "genesis-timestamp": now // 1000, "genesis-nbits": 0x1D00FFFF,
            "genesis-nonce": 0, "genesis-pubkey-hash": bytes(key.pubkey_hash),
        })
        fixed = fixed.replace({"chain-params-hash": params_hash(fixed)})
        chain_id = fixed["chain-params-hash"]
        txs = []
        root = fixed["root-stream-name"]
        if root:
            op = CreateStream(root, 0 if fixed["root-stream-open"] else RESTRICT_WRITE)
            txs.append(Transaction.create(key, [op], chain_id, now // 1000))
        block = Block.build(key, chain_id, 0, ZERO_HASH, now, txs)
        fixed = fixed.replace({"genesis-hash": bytes(block.hash)})
        url = store_url(cdir, runtime.db_url)
        if url.startswith("sqlite:///"):
            with contextlib.suppress(FileNotFoundError):
                Path(url[len("sqlite:///"):]).unlink()
        store = ChainStore(url)
        try:
            if store.tip() is not None:
                store.rollback_to(-1)
            store.set_meta("genesis-hash", fixed["genesis-hash"].hex())
            chain = Chain(store, fixed, codec)
            chain.connect(block)
            if root:
                store.set_subscribed(txs[0].txid.hex(), True)
            chain.close()
        finally:
            store.close()
        side = cdir / PENDING_PARAMS
        write_params_file(side, fixed)
        os.replace(side, cdir / paths.PARAMS_FILE)
        log.info("genesis block %s created; parameters locked", block.hash.hex())
        self.announce("New chain: genesis block created; all permissions go to "
                      f"{codec.encode(key.pubkey_hash)}")
        return fixed

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> int:
        cdir, _ = load_chain_files(self.datadir, self.chain_name)
        pid = PidFile(cdir)
        pid.acquire()
        try:
            ctx, runtime = self._open()
        except BaseException:
            pid.release()
            raise
        self.ctx = ctx
        restored, refused = load_mempool(ctx)
        if restored or refused:
            log.info("mempool: %d saved transactions re-admitted, %d no longer valid",
                     restored, refused)
        table = MethodTable()
        register_all(table, ctx)
        dispatcher = Dispatcher(table, chain_name=self.chain_name,
                                allow_methods=set(runtime.rpcallowmethod) or None)
        dispatcher.read_barrier = ctx.consistent
        settings = RpcSettings(
            chain_name=self.chain_name, user=runtime.rpcuser, password=runtime.rpcpassword,
            allow_ips=list(runtime.rpcallowip), bind=list(runtime.rpcbind) or None,
            port=runtime.rpcport if runtime.rpcport is not None else ctx.params.rpc_port,
            keepalive=runtime.rpckeepalive, max_body=runtime.rpcmaxbody)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, ctx.stopping.set)
        server = None
        net = None
        tasks: list[asyncio.Task] = []
        try:
            server = await start_rpc_server(dispatcher, settings)
            port = ctx.params.network_port if runtime.port is None else runtime.port
            if not runtime.offline:
                net = Network(ctx, port=port, listen=runtime.listen,
                              addnodes=tuple(runtime.addnode) + tuple(runtime.connect),
                              max_connections=runtime.maxconnections)
                await net.start()
                ctx.network = net
            if runtime.gen and not runtime.offline:
                miner = Miner(ctx.chain, ctx.mempool, ctx.wallet, ctx.connect_block,
                              turnover=float(runtime.miningturnover),
                              empty_rounds=float(runtime.mineemptyrounds),
                              requires_peers=bool(runtime.miningrequirespeers),
                              peer_count=lambda: (ctx.network.connection_count()
                                                  if ctx.network is not None else 0))
                ctx.miner = miner
                tasks.append(asyncio.create_task(miner.run(), name="miner"))
            self.announce(f"chainmill {VERSION} node for chain {self.chain_name} "
                          f"(protocol 20013) at height {ctx.chain.height}")
            self.announce("Other nodes can connect to this node using:")
            self.announce(f"chainmill start {self.chain_name}@127.0.0.1:{port}")
            local = "" if runtime.rpcallowip else " (local only)"
            self.announce(f"JSON-RPC API listening on port {server.port}{local}")
            self.announce("Node ready.")
            log.info("node ready: chain %s, height %d, rpc port %d", self.chain_name,
                     ctx.chain.height, server.port)
            stop_wait = asyncio.create_task(ctx.stopping.wait())
            while True:
                done, _ = await asyncio.wait([stop_wait, *tasks],
                                             return_when=asyncio.FIRST_COMPLETED)
                if stop_wait in done:
                    break
                for t in done:
                    tasks.remove(t)
                    if t.exception() is not None:
                        log.error("task %s failed", t.get_name(), exc_info=t.exception())
                        ctx.stopping.set()
            return 0
        finally:
            log.info("shutting down")
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if net is not None:
                await net.close()
            if server is not None:
                # Let the `stop` call's own response go out before the listener closes.
                await asyncio.sleep(0.05)
                await server.close()
            await ctx.hooks.close()
            log.info("mempool: %d unconfirmed transactions saved", save_mempool(ctx))
            ctx.chain.close()
            ctx.store.close()
            pid.release()
            log.info("stopped after %.1f s", time.time() - ctx.started)
