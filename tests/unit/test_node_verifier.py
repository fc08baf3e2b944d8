"""node.verifier: batches checked on worker processes give the same answers, in order, as a
check on the calling thread; a dead worker pool falls back to threads without losing a batch."""

from __future__ import annotations

import os
import signal

import pytest
from test_ledger_transactions import CHAIN_A, CHAIN_B, KEY, OTHER_KEY

from ledger.transactions import Publish, Transaction
from node import verifier as v
from node.verifier import ParallelVerifier

STREAM = bytes(32)


def tx(i: int, chain: bytes = CHAIN_A) -> Transaction:
    return Transaction.create(KEY, [Publish(STREAM, (f"k{i}",), 2, b"{}")], chain, 1, i)


def mixed(n: int) -> tuple[list[Transaction], list[bool]]:
    """Every 7th signed for another chain, every 11th with another sender's key."""
    txs, want = [], []
    for i in range(n):
        t = tx(i, CHAIN_B if i % 7 == 3 else CHAIN_A)
        if i % 11 == 5:
            t = Transaction(OTHER_KEY.pubkey, t.nonce, t.time, t.ops, t.signature)
        txs.append(t)
        want.append(i % 7 != 3 and i % 11 != 5)
    return txs, want


@pytest.fixture
def verifier():
    ver = ParallelVerifier(CHAIN_A, workers=2)
    yield ver
    ver.close()


def test_node_verifier_large_batch_on_processes_matches_each_signature(verifier):
    txs, want = mixed(3 * v.MIN_PROCESS_BATCH + 5)
    verifier.start()
    assert verifier._procs is not None  # the batch below really goes to the processes
    assert verifier(txs) == want
    assert verifier._procs is not None


def test_node_verifier_small_batch_is_checked_in_place(verifier):
    txs, want = mixed(v.MIN_PROCESS_BATCH - 1)
    assert verifier(txs) == want
    assert verifier._procs is None and verifier._threads is None  # no pool was needed


def test_node_verifier_dead_workers_fall_back_to_threads(verifier):
    txs, want = mixed(2 * v.MIN_PROCESS_BATCH)
    verifier.start()
    for pid in list(verifier._procs._processes):
        os.kill(pid, signal.SIGKILL)
    assert verifier(txs) == want  # the same batch, answered on threads
    assert verifier._procs is None and not verifier.processes
    assert verifier(txs) == want


def test_node_verifier_without_processes_uses_threads():
    ver = ParallelVerifier(CHAIN_A, workers=2, processes=False)
    try:
        txs, want = mixed(2 * v.MIN_PROCESS_BATCH)
        assert ver(txs) == want
        assert ver._procs is None and ver._threads is not None
    finally:
        ver.close()


def test_node_verifier_refuses_work_after_close():
    ver = ParallelVerifier(CHAIN_A, workers=1)
    ver.close()
    with pytest.raises(RuntimeError):
        ver(mixed(v.MIN_PROCESS_BATCH)[0])


def test_node_verifier_packs_what_a_worker_unpacks():
    items = [(t.sender, t.signature, t.txid) for t in mixed(5)[0]]
    assert v.unpack_signed(v.pack_signed(items)) == items
    with pytest.raises(ValueError):
        v.unpack_signed(v.pack_signed(items)[:-1])


def test_node_verifier_threads_calling_at_once_each_get_their_own_answers(verifier):
    import threading

    verifier.start()
    batches = [mixed(v.MIN_PROCESS_BATCH + 40 * k) for k in range(6)]
    got: dict[int, list[bool]] = {}

    def check(k: int) -> None:
        for _ in range(3):
            got[k] = verifier(batches[k][0])

    threads = [threading.Thread(target=check, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {k: got.get(k) for k in range(len(batches))} == {
        k: want for k, (_, want) in enumerate(batches)}
    assert verifier._procs is not None  # answered by the worker processes throughout


def test_node_verifier_a_key_of_another_size_is_checked_not_misframed(verifier):
    """The pipe format writes keys and txids without their lengths: a tx whose sender key is
    not 33 bytes (no decoded tx has one) must not shift the batch's other signatures."""
    txs, want = mixed(2 * v.MIN_PROCESS_BATCH)
    odd = txs[10]
    txs[10] = Transaction(b"\x04" + bytes(64), odd.nonce, odd.time, odd.ops, odd.signature)
    want[10] = False
    verifier.start()
    assert verifier(txs) == want
