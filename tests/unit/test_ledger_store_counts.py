"""ChainStore.distinct_counts: getstreaminfo's key and publisher counts, counted in SQL.

The counts must equal what the readers list (the distinct keys and publishers of the
stream's confirmed items, plus those only pending items have), on a real SQLite store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.store import BlockRow, BlockWrite, ChainStore, ItemRow, TxRow

STREAM = "aa" * 32
OTHER = "bb" * 32


def _item(stream: str, txid: str, vout: int, height: int, publisher: str,
          keys: tuple[str, ...]) -> ItemRow:
    return ItemRow(0, stream, txid, vout, height, 0, publisher, keys, 0, b"\x00", False, 0)


@pytest.fixture()
def store(tmp_path: Path) -> ChainStore:
    s = ChainStore(f"sqlite:///{tmp_path / 'chain.db'}")
    blocks = [
        [(STREAM, "alice", ("PO-1",)), (STREAM, "alice", ("PO-2", "rush", "rush")),
         (OTHER, "carol", ("elsewhere",))],
        [(STREAM, "bob", ("PO-1", "late")), (STREAM, "bob", ())],
    ]
    for h, rows in enumerate(blocks):
        txid = f"{h:064x}"
        items = [_item(st, txid, v, h, pub, keys) for v, (st, pub, keys) in enumerate(rows)]
        tx = b"tx" + b"\x00" * len(items)  # the store keeps each item's data in its tx's bytes
        s.put_block(BlockWrite(BlockRow(h, f"{h + 100:064x}", f"{h + 99:064x}", 0, 0, "m", 1, 1),
                               b"header" + tx, [TxRow(txid, h, 0, "m", 0, tx)], items, [], []))
    yield s
    s.close()


def _listed(store: ChainStore, stream: str, pending_keys: set[str], pending_pubs: set[str]
            ) -> tuple[int, int]:
    """What liststreamkeys / liststreampublishers show: confirmed names plus pending ones."""
    keys = {k for k, _, _ in store.key_counts(stream, None)} | pending_keys
    pubs = {p for p, _, _ in store.publisher_counts(stream, None)} | pending_pubs
    return len(keys), len(pubs)


@pytest.mark.parametrize(("pending_keys", "pending_pubs"), [
    (set(), set()),
    ({"PO-1", "rush"}, {"alice"}),             # pending items with confirmed names only
    ({"PO-9", "PO-1", "elsewhere"}, {"dave", "bob", "carol"}),  # new names, another stream's
    ({f"k{i}" for i in range(1200)}, {f"p{i}" for i in range(700)}),  # over one IN chunk
])
def test_distinct_counts_match_the_listed_names(store: ChainStore, pending_keys: set[str],
                                                pending_pubs: set[str]) -> None:
    got = store.distinct_counts(STREAM, pending_keys, pending_pubs)
    assert got == _listed(store, STREAM, pending_keys, pending_pubs)


def test_distinct_counts_of_the_confirmed_items(store: ChainStore) -> None:
    assert store.distinct_counts(STREAM) == (4, 2)   # PO-1 PO-2 rush late; alice bob
    assert store.distinct_counts(OTHER) == (1, 1)
    assert store.distinct_counts("cc" * 32, {"x"}, {"y"}) == (1, 1)  # only pending items


@pytest.mark.parametrize("kind", ["key", "publisher"])
def test_name_window_is_a_slice_of_the_full_list(store: ChainStore, kind: str) -> None:
    full = store.key_counts(STREAM, None) if kind == "key" else \
        store.publisher_counts(STREAM, None)
    assert [r[0] for r in full][:1] == (["PO-1"] if kind == "key" else ["alice"])
    for offset in range(len(full) + 2):
        for limit in range(len(full) + 2):
            assert store.name_window(STREAM, kind, offset, limit) == \
                full[offset:offset + limit], (offset, limit)


def test_name_window_orders_ties_by_name(store: ChainStore) -> None:
    # PO-2 and rush first appear in the same item: first-appearance ties go by name
    assert [r[0] for r in store.name_window(STREAM, "key", 0, 10)] == \
        ["PO-1", "PO-2", "rush", "late"]
    assert store.name_window(STREAM, "key", 0, 10)[0] == ("PO-1", 2, 1)


def test_present_names(store: ChainStore) -> None:
    assert store.present_names(STREAM, "key", {"PO-1", "late", "elsewhere", "new"}) == \
        {"PO-1", "late"}
    assert store.present_names(STREAM, "publisher", ["bob", "carol", "dave"]) == {"bob"}
    assert store.distinct_count(STREAM, "key", {"new", "PO-1"}) == 5
    assert store.distinct_count(STREAM, "publisher") == 2
    with pytest.raises(ValueError):
        store.name_window(STREAM, "txid", 0, 1)
    with pytest.raises(ValueError):
        store.distinct_count(STREAM, "txid")
