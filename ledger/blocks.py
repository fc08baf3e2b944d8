"""Blocks: header, recoverable miner signature, transactions; canonical encoding and hash.

The block hash is the double SHA-256 of the header. The miner signs SHA-256 of a domain tag,
the chain id and the block hash with a recoverable signature; validation recovers the miner's
public key from it, so the header needs no miner field and a forged signature names nobody.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ledger.codec import Reader, Writer, encode_varint
from ledger.errors import DecodeError
from ledger.hashing import hash160, sha256d
from ledger.keys import KeyPair, recover
from ledger.merkle import merkle_root
from ledger.transactions import Transaction
from ledger.types import Hash32, PubKeyHash

BLOCK_VERSION = 1
HEADER_SIZE = 1 + 4 + 32 + 32 + 8
MAX_BLOCK_TXS = 1_000_000
BLOCK_OVERHEAD = HEADER_SIZE + 65 + 9
"""Bytes of an encoded block besides its transactions' own bytes and length prefixes: the
header, the miner's signature and the largest transaction-count prefix."""


def tx_cost(tx: Transaction) -> int:
    """Bytes a transaction adds to an encoded block: its length prefix and its bytes."""
    n = tx.size
    return n + varint_size(n)


def check_tx_count(n: int) -> None:
    """The decoder's bound on the number of transactions in a block."""
    if n > MAX_BLOCK_TXS:
        raise DecodeError(f"a block holds at most {MAX_BLOCK_TXS} transactions, not {n}")


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """Header fields; `time_ms` is Unix milliseconds so sub-second block times stay ordered."""

    version: int
    height: int
    prev_hash: bytes
    merkle_root: bytes
    time_ms: int

    def encode(self) -> bytes:
        w = Writer()
        w.u8(self.version)
        w.u32(self.height)
        w.fixed(self.prev_hash)
        w.fixed(self.merkle_root)
        w.u64(self.time_ms)
        return w.getvalue()

    @classmethod
    def decode_from(cls, r: Reader) -> BlockHeader:
        version = r.u8()
        if version != BLOCK_VERSION:
            raise DecodeError(f"unknown block version {version}")
        return cls(version, r.u32(), r.fixed(32), r.fixed(32), r.u64())

    @property
    def hash(self) -> Hash32:
        return sha256d(self.encode())

    @property
    def time(self) -> int:
        """Block time in whole seconds, as the API shows it."""
        return self.time_ms // 1000


@dataclass(slots=True)
class Block:
    header: BlockHeader
    signature: bytes
    txs: list[Transaction]
    _hash: bytes | None = field(default=None, repr=False, compare=False)
    _raw: bytes | None = field(default=None, repr=False, compare=False)
    _miner: bytes | None = field(default=None, repr=False, compare=False)
    _merkle_of: tuple[list[bytes], bytes] | None = field(default=None, repr=False,
                                                          compare=False)
    """(txids, root): `build` computed the header's Merkle root `root` from these txids."""
    _offsets: list[int] | None = field(default=None, repr=False, compare=False)
    """Where each transaction starts in `_raw`, when `raw` encoded it or `decode` read it."""
    _applied_on: object = field(default=None, repr=False, compare=False)
    """The chain state on which this node's miner applied every transaction of the block, in
    block order at the block's height, just before it submitted the block (node.miner); None
    for a block decoded or received. consensus's `connect_block` trusts it on that same state
    object only: the node puts a new state object in place at every change of its chain."""

    @property
    def hash(self) -> Hash32:
        if self._hash is None:
            self._hash = self.header.hash
        return Hash32(self._hash)

    @property
    def height(self) -> int:
        return self.header.height

    @staticmethod
    def sighash(chain_id: bytes, block_hash: bytes) -> bytes:
        return hashlib.sha256(b"chainmill-block" + chain_id + block_hash).digest()

    def merkle_root_matches(self, txids: list[bytes]) -> bool:
        """True when the header's Merkle root is the root of `txids` (the block's txids).

        A block this node built is not hashed again: `build` kept the txids it computed
        the root from, and the same txids give the same root (two hashes per transaction
        saved when the node checks its own block, about 1 us each)."""
        root = self.header.merkle_root
        built = self._merkle_of
        if built is not None and built[1] == root and built[0] == txids:
            return True
        return merkle_root(txids) == root

    def miner_pubkey(self, chain_id: bytes) -> bytes:
        """Recover the signer's public key; raises InvalidSignature."""
        if self._miner is None:
            self._miner = recover(self.signature, self.sighash(chain_id, self.hash))
        return self._miner

    def miner_hash(self, chain_id: bytes) -> PubKeyHash:
        return hash160(self.miner_pubkey(chain_id))

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            # Encoded as Writer.var_bytes would, in one pass that also notes where each
            # transaction starts: the block checks ask for the offsets of the block the
            # node just built (this runs for every transaction the node mines).
            count = encode_varint(len(self.txs))
            parts = [self.header.encode(), self.signature, count]
            pos = HEADER_SIZE + len(self.signature) + len(count)
            offsets: list[int] = []
            add_part, add_offset = parts.append, offsets.append
            for tx in self.txs:
                raw = tx.raw
                n = len(raw)
                prefix = bytes((n,)) if n < 0xFD else encode_varint(n)
                pos += len(prefix)
                add_offset(pos)
                add_part(prefix)
                add_part(raw)
                pos += n
            self._raw = b"".join(parts)
            self._offsets = offsets
        return self._raw

    @property
    def size(self) -> int:
        return len(self.raw)

    def tx_offsets(self) -> list[int]:
        """Byte offset of each transaction inside the encoded block (used for streamrefs).

        The list noted when this block was encoded or decoded here, when it was (do not
        change it)."""
        if self._offsets is not None and self._raw is not None:
            return self._offsets
        pos = HEADER_SIZE + 65 + varint_size(len(self.txs))
        out = []
        for tx in self.txs:
            n = len(tx.raw)
            pos += varint_size(n)
            out.append(pos)
            pos += n
        return out

    @classmethod
    def build(cls, key: KeyPair, chain_id: bytes, height: int, prev_hash: bytes,
              time_ms: int, txs: list[Transaction]) -> Block:
        txids = [t.txid for t in txs]
        root = merkle_root(txids)
        header = BlockHeader(BLOCK_VERSION, height, prev_hash, root, time_ms)
        block = cls(header, b"", txs)
        block._merkle_of = (txids, root)
        block.signature = key.sign_recoverable(cls.sighash(chain_id, block.hash))
        block._miner = key.pubkey
        return block

    @classmethod
    def decode(cls, raw: bytes, max_size: int | None = None) -> Block:
        """Strict decoding of a whole block; refuses oversize, truncated or trailing input."""
        if max_size is not None and len(raw) > max_size:
            raise DecodeError(f"block of {len(raw)} bytes exceeds {max_size}")
        r = Reader(raw)
        header = BlockHeader.decode_from(r)
        signature = r.fixed(65)
        n = r.varint()
        check_tx_count(n)
        if n > r.remaining():
            raise DecodeError("impossible transaction count")
        # A synced block's loop, with local names. It also notes where each transaction
        # starts, as `raw` does for a block encoded here: the block checks ask for the
        # offsets, and working them out again from the transactions' sizes cost about a
        # tenth of what decoding the transaction did.
        read, decode, limit = r.var_bytes, Transaction.decode, len(raw)
        txs: list[Transaction] = []
        offsets: list[int] = []
        add_tx, add_offset = txs.append, offsets.append
        for _ in range(n):
            tx_raw = read(limit)
            add_offset(r._pos - len(tx_raw))  # where it starts: Reader.pos, without the call
            add_tx(decode(tx_raw))
        r.end()
        return cls(header, signature, txs, None, bytes(raw), None, None, offsets)


def varint_size(n: int) -> int:
    """Bytes of the compact-size prefix `encode_varint(n)` writes, without building it: this
    runs for every transaction at admission, in the miner and at block connect (the import
    and bytes it replaced cost about 4 % of a relaying node's CPU under load)."""
    if n < 0xFD:
        return 1
    if n <= 0xFFFF:
        return 3
    return 5 if n <= 0xFFFFFFFF else 9
