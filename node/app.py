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
from config.runtime import (
    ensure_chain_conf,
    load_runtime_config,
    remember_settings,
    runtime_defaults,
)
from ledger.addresses import AddressCodec
from ledger.blocks import Block
from ledger.errors import ChainmillError, StoreError
from ledger.store import ChainStore
from ledger.transactions import RESTRICT_WRITE, CreateStream, Transaction
from ledger.types import ZERO_HASH
from node import memory
from node.chain import Chain, now_ms
from node.context import NodeContext
from node.health import health_facts, health_report
from node.hooks import HookRunner
from node.integrity import TipMarker, check_store
from node.journal import JOURNAL_FILE, OwnTxJournal
from node.journal import restore as restore_own_txs
from node.lockfile import ChainLock
from node.mempool import Mempool
from node.metrics import NodeMetrics, node_state
from node.miner import Miner
from node.p2p.network import Network
from node.rpc import limits
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.methods import register_all
from node.rpc.probes import Probes
from node.rpc.server import check_rpc_tls_files, settings_from_runtime, start_rpc_server
from node.wallet import WALLET_FILE, Wallet, WalletDamaged

log = logging.getLogger(__name__)

VERSION = "0.1.0"
PID_FILE = paths.PID_FILE
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
    """`chainmill.pid` in the chain directory while the node runs, for information: whether
    a node runs is decided by the chain directory's lock (node.lockfile), not by this file."""

    def __init__(self, chain_dir: Path) -> None:
        self.path = chain_dir / PID_FILE

    def write(self) -> None:
        paths.write_private_file(self.path, f"{os.getpid()}\n")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()


WALLET_META = "wallet-address"
"""Store meta: the wallet's default address, to name it when the wallet file is lost."""


def open_wallet(path: Path, codec: AddressCodec, *, replace: bool = False) -> Wallet:
    """The wallet; a damaged file is refused, or with `replace` (--new-wallet) moved aside
    so that a new one can be made."""
    try:
        return Wallet(path, codec)
    except WalletDamaged:
        if not replace:
            raise
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        os.replace(path, aside)
        log.warning("damaged wallet file moved to %s", aside.name)
        return Wallet(path, codec)


def _first_key(wallet: Wallet, runtime: Any) -> None:
    if runtime.initprivkey:
        wallet.import_key(wallet.codec.decode_wif(runtime.initprivkey))
    else:
        wallet.new_key()


def missing_wallet_message(chain: str, store: ChainStore) -> str:
    address = store.get_meta(WALLET_META)
    was = f" (its address was {address})" if address else ""
    return (f"the wallet file {WALLET_FILE} is missing or empty, but this node has used the "
            f"chain{was}: restore {WALLET_FILE} from a backup, or start with `chainmill start "
            f"{chain} --new-wallet` to make a new address (the old address and its "
            "permissions are lost to this node)")


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
        self.tip_marker: TipMarker | None = None

    # -- start-up -----------------------------------------------------------------------------
    def _open(self) -> tuple[NodeContext, Any]:
        cdir, params = load_chain_files(self.datadir, self.chain_name)
        ensure_chain_conf(cdir)
        runtime = load_runtime_config(self.datadir, self.chain_name, cli=self.cli,
                                      environ=self.environ, defaults=runtime_defaults(params))
        check_rpc_tls_files(runtime, cdir)  # before anything is written (e.g. the genesis)
        codec = codec_for(params)
        wallet = open_wallet(cdir / WALLET_FILE, codec, replace=runtime.newwallet)
        if len(wallet) == 0 and not params.locked:  # a new chain's first start
            _first_key(wallet, runtime)
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
        chain_id = bytes(params["chain-params-hash"])
        reindex = runtime.reindex or store.get_meta(Chain.REINDEX_MARK) == "in progress"
        if not reindex:  # before anything reads the store; after a reindex, of its result
            self._check_store(store, codec, chain_id, runtime.checkblocks)
        chain = Chain(store, params, codec)
        if reindex:
            log.info("reindexing the chain store from its blocks")
            chain.reindex(quarantine=cdir)
            self._check_store(store, codec, chain_id, runtime.checkblocks)
        self._check_tip(cdir, chain, runtime)
        if len(wallet) == 0:
            if chain.height >= 0 and not runtime.newwallet:
                raise StoreError(missing_wallet_message(self.chain_name, store))
            _first_key(wallet, runtime)
        store.set_meta(WALLET_META, codec.encode(wallet.default.pubkey_hash))
        if chain.height < 0 and not (runtime.addnode or runtime.connect):
            raise StoreError("the chain store has no genesis block and no peer to fetch it "
                             "from (start with CHAIN@HOST:PORT to join)")
        hooks = HookRunner(walletnotify=runtime.walletnotify,
                           walletnotifynew=runtime.walletnotifynew,
                           blocknotify=runtime.blocknotify, timeout=runtime.hooktimeout)
        ctx = NodeContext(chain_name=self.chain_name, chain_dir=cdir, params=params,
                          runtime=runtime, chain=chain, mempool=Mempool(chain), wallet=wallet,
                          hooks=hooks, codec=codec, version=VERSION)
        ctx.tip_marker = self.tip_marker
        return ctx, runtime

    def _check_store(self, store: ChainStore, codec: AddressCodec, chain_id: bytes,
                     checkblocks: int) -> None:
        n = check_store(store, codec, chain_id, self.chain_name, checkblocks)
        log.info("chain store check: the last %d block(s) and their rows agree%s", n,
                 " (full check)" if checkblocks <= 0 else "")

    def _check_tip(self, cdir: Path, chain: Chain, runtime: Any) -> None:
        """Say so when the store is lower than the node had reached (e.g. its -wal file was
        lost after a crash): the missing blocks are fetched again from peers."""
        marker = TipMarker(cdir)
        before = marker.read()
        if before is not None and before[0] > chain.height:
            peers = runtime.addnode or runtime.connect
            line = (f"warning: the chain store ends at block {chain.height} but this node had "
                    f"reached block {before[0]}: {before[0] - chain.height} block(s) lost "
                    "(a deleted or damaged -wal file of the store loses the latest blocks); "
                    + ("they are fetched again from peers" if peers else
                       "no peer is configured to fetch them from (addnode)"))
            log.warning("%s", line)
            self.announce(line)
        if chain.height >= 0:
            marker.write(chain.height, chain.state.tip_hash.hex())
        self.tip_marker = marker

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

    def _remember_start_settings(self, cdir: Path) -> None:
        """Keep the ports and store URL given on the command line in the chain's
        chainmill.conf, so a later plain `chainmill start CHAIN` and `chainmill cli CHAIN`
        find the same node (as a join start remembers them)."""
        given = {n: self.cli[n] for n in ("port", "rpcport", "db_url")
                 if self.cli.get(n) is not None}
        if given and remember_settings(cdir, given):
            log.info("remembered %s in %s", ", ".join(sorted(given)), paths.CONF_FILE)

    # -- running ------------------------------------------------------------------------------
    @staticmethod
    def _probes(ctx: NodeContext, dispatcher: Dispatcher, runtime: Any) -> Probes:
        """/health and /metrics, with the metrics counted at the dispatcher, the context's
        block-connect and reorganisation paths and the hook runner."""
        metrics = NodeMetrics(lambda: node_state(ctx))
        ctx.metrics = metrics
        dispatcher.observe = metrics.observe_rpc
        ctx.hooks.observe = metrics.observe_hook

        async def health() -> tuple[int, dict[str, Any]]:
            return health_report(await health_facts(ctx, dispatcher.warmup_status))

        return Probes(health=health, metrics=metrics.render,
                      open_networks=tuple(runtime.metricsallowip))

    async def run(self) -> int:
        memory.limit_arenas()  # before any worker thread makes an arena of its own
        cdir, _ = load_chain_files(self.datadir, self.chain_name)
        lock = ChainLock(cdir)
        lock.acquire()
        pid = PidFile(cdir)
        try:
            pid.write()
            ctx, runtime = self._open()
        except BaseException:
            pid.release()
            lock.release()
            raise
        self.ctx = ctx
        restored, refused = load_mempool(ctx)
        if restored or refused:
            log.info("mempool: %d saved transactions re-admitted, %d no longer valid",
                     restored, refused)
        ctx.journal = OwnTxJournal(cdir / JOURNAL_FILE)
        kept, mined, invalid = restore_own_txs(ctx.journal, ctx.mempool)
        if kept or mined or invalid:
            log.info("own-transaction journal: %d pending (in the mempool, rebroadcast to "
                     "peers), %d mined, %d no longer valid", kept, mined, invalid)
        table = MethodTable()
        register_all(table, ctx)
        dispatcher = Dispatcher(table, chain_name=self.chain_name,
                                allow_methods=set(runtime.rpcallowmethod) or None,
                                before_reply=ctx.own_txs_durable,
                                on_durable=ctx.journal.after_sync)
        probes = self._probes(ctx, dispatcher, runtime)
        # Descriptor budgets (issue 15.2): P2P and RPC each get their own cap, so a flood of
        # one cannot exhaust the descriptors the other needs.
        descriptors = limits.raise_descriptor_limit()
        p2p_cap = limits.p2p_connection_budget(descriptors, runtime.maxconnections)
        rpc_cap = limits.rpc_connection_budget(descriptors, runtime.rpcmaxconnections, p2p_cap)
        log.info("file descriptors: %d; P2P at most %d connections, RPC at most %d",
                 descriptors, p2p_cap, min(rpc_cap, runtime.rpcmaxconnections))
        dispatcher.read_barrier = ctx.consistent
        loop = asyncio.get_running_loop()
        limits.install_accept_error_filter(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, ctx.stopping.set)
        server = None
        net = None
        tasks: list[asyncio.Task] = []
        try:
            self._remember_start_settings(cdir)  # before the first RPC answer
            settings = settings_from_runtime(
                runtime, self.chain_name, ctx.chain_dir,
                runtime.rpcport if runtime.rpcport is not None else ctx.params.rpc_port, rpc_cap)
            server = await start_rpc_server(dispatcher, settings, probes)
            port = ctx.params.network_port if runtime.port is None else runtime.port
            if not runtime.offline:
                net = Network(ctx, port=port, listen=runtime.listen,
                              addnodes=tuple(runtime.addnode) + tuple(runtime.connect),
                              max_connections=p2p_cap, bind=tuple(runtime.bind))
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
            memory.settle_collector()
            tasks.append(asyncio.create_task(memory.trim_periodically(ctx.stopping),
                                             name="malloc-trim"))
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
            if ctx.journal is not None:
                ctx.journal.close()
            ctx.chain.close()
            ctx.store.close()
            pid.release()
            lock.release()
            log.info("cyclic collector: %s", memory.collector_clock.summary())
            log.info("stopped after %.1f s", time.time() - ctx.started)
