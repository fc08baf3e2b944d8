"""Durability of acknowledged writes: a txid returned by the node survives any crash.

What: several threads publish as fast as the node answers; the node is SIGKILLed in the
middle of that load, three times, and restarted each time. Every txid any call returned
must end up mined (none lost, none duplicated), because the node's own transactions are
fsynced to its journal (`wallet.txs`, mode 0600) before the reply and put back into the
pool after a restart. Mined records leave the journal; a damaged or invalid record is
dropped with a log line, and the node starts. A transaction made while cut off from the
miners, then SIGKILLed, is rebroadcast after the restart and mined by a peer.

How: one node, 0.2 s blocks; 4 publisher threads with their own clients; the kill comes
once a round's quota of acknowledged calls is reached, so calls are in flight when it
lands. Calls that fail (connection reset by the kill) were never acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from framework import TestNode, wait_until
from network_support import cut_link, start_network, wait_confirmed

from config.params import read_params_file
from ledger.keys import KeyPair
from ledger.transactions import DataFormat, Publish, Transaction
from node.client import RpcConnectionError, RpcError
from node.journal import JOURNAL_FILE, decode_records, encode_record

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_durability")

THREADS = 4
PER_ROUND = 120


class Publishers:
    """THREADS threads publishing one item per call until the node goes away."""

    def __init__(self, node: TestNode, stream: str, round_no: int) -> None:
        self.node = node
        self.stream = stream
        self.round_no = round_no
        self.acked: list[str] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                        for t in range(THREADS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, t: int) -> None:
        client = self.node.client(timeout=10)
        i = 0
        try:
            while True:
                i += 1
                try:
                    txid = client.call("publish", self.stream, f"r{self.round_no}-t{t}-{i}",
                                       {"json": {"round": self.round_no, "t": t, "i": i}})
                except (RpcConnectionError, OSError):
                    return  # the node was killed: this call was never acknowledged
                with self.lock:
                    self.acked.append(txid)
        except RpcError as e:
            self.errors.append(e)
        finally:
            client.close()

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)
        assert not self.errors, self.errors


def stream_txids(node: TestNode, stream: str) -> list[str]:
    return [i["txid"] for i in node.liststreamitems(stream, False, 1_000_000)
            if i["confirmations"] >= 1]


def test_acknowledged_publishes_survive_sigkill(harness):
    node = harness.start_node()
    node.wait_for_confirmation(node.create("stream", "log", True))
    acked: list[str] = []
    for round_no in range(3):
        log.info("round %d: %d threads publish; SIGKILL once %d calls are acknowledged",
                 round_no, THREADS, PER_ROUND)
        load = Publishers(node, "log", round_no)
        load.start()
        wait_until(lambda load=load: load.count() >= PER_ROUND,
                   msg=f"{PER_ROUND} acknowledged publishes")
        node.kill()
        load.join()
        acked += load.acked
        pending = len(decode_records((node.chain_dir / JOURNAL_FILE).read_bytes())[0])
        log.info("round %d: %d acknowledged, %d records in the journal at the kill",
                 round_no, len(load.acked), pending)
        node.start()

    log.info("every acknowledged txid (%d) is mined after the restarts", len(acked))
    assert len(set(acked)) == len(acked)
    wait_until(lambda: set(acked) <= set(stream_txids(node, "log")),
               msg="every acknowledged publish mined")
    txids = stream_txids(node, "log")
    assert len(txids) == len(set(txids))  # and none twice
    journal = node.chain_dir / JOURNAL_FILE
    assert journal.stat().st_mode & 0o777 == 0o600

    log.info("a clean restart drops the mined records from the journal")
    node.restart()
    assert decode_records(journal.read_bytes())[0] == []

    log.info("a damaged record and an invalid one are dropped with a log line; the node "
             "starts")
    chain_id = read_params_file(node.chain_dir / "params.dat")["chain-params-hash"]
    stream = bytes.fromhex(node.getstreaminfo("log")["createtxid"])
    stranger = Transaction.create(KeyPair.generate(),  # a key without send permission
                                  [Publish(stream, ("k",), DataFormat.TEXT, b"x")],
                                  chain_id, int(time.time()))
    node.stop()
    with journal.open("ab") as f:
        f.write(encode_record(stranger.raw))
        f.write(b"0badc0de 00ff\n")
    node.start()
    assert decode_records(journal.read_bytes())[0] == []
    assert "dropped from the journal: no longer valid" in node.debug_log()
    assert "1 unreadable record(s) skipped" in node.debug_log()
    assert node.getmempoolinfo()["size"] == 0


def test_own_transaction_is_rebroadcast_after_a_crash(harness):
    seed, peer = start_network(harness, 2, grants="connect,send,receive")  # peer cannot mine
    txid = seed.create("stream", "orders", True)
    wait_confirmed([seed, peer], txid)

    log.info("the peer publishes while cut off from the only miner, then is SIGKILLed")
    cut_link(seed, peer)
    made = peer.publish("orders", "offline", {"text": "made while cut off"})
    assert made in peer.getrawmempool() and made not in seed.getrawmempool()
    peer.kill()

    log.info("after the restart it reconnects and rebroadcasts it; the seed mines it")
    peer.start()
    assert made in peer.getrawmempool() or peer.getrawtransaction(made, 1)["confirmations"]
    wait_confirmed([seed, peer], made)
