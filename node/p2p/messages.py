"""P2P message types and their payload encodings (strict decoders, as for the ledger)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from ledger.blocks import MAX_BLOCK_TXS, BlockHeader
from ledger.codec import Reader, Writer
from ledger.errors import DecodeError

PROTOCOL = 3
COMPACT_BLOCKS_SINCE = 3
"""Peers at this protocol version or later get new blocks as CMPCTBLOCK (txids and raw
hashes, rebuilt from the mempool) instead of an INV followed by the whole block."""
MAX_INV = 5_000
"""Entries in one INV/GETDATA/NOTFOUND message (a flood is cut into many small ones, each
handled and then yielding to the event loop)."""
MAX_LOCATOR = 64


class Msg(IntEnum):
    HELLO = 1  # encrypted: version, chain id, genesis, listen port, claimed public key
    AUTH = 2  # encrypted: public key, signature over the session transcript; READY or REJECT
    REJECT = 3  # reason text; the connection closes after it
    PING = 4
    PONG = 5
    INV = 6  # announcements: (kind, hash)*
    GETDATA = 7  # requests: (kind, hash)*
    TX = 8  # raw transaction
    BLOCK = 9  # raw block
    GETBLOCKS = 10  # locator hashes; answered with BLOCKS after the last common one
    BLOCKS = 11  # peer height + raw blocks in order
    GETPARAMS = 12  # a joining node asks for params.dat; may carry its address hash
    PARAMS = 13  # params.dat text + whether the asker's address may connect
    NOTFOUND = 14
    READY = 15  # the sender verified the peer's AUTH and connect permission: height, tip
    NOISE = 16  # one Noise XX key exchange message (the only frames in clear, with GETPARAMS)
    CMPCTBLOCK = 17  # header, miner signature, (txid, raw hash)* of a new block
    GETBLOCKTXN = 18  # block hash + indexes of the transactions a CMPCTBLOCK left missing
    BLOCKTXN = 19  # block hash + those raw transactions, in the order asked


class Inv(IntEnum):
    TX = 1
    BLOCK = 2


@dataclass(frozen=True, slots=True)
class Hello:
    """What a side claims once the channel is encrypted; nothing about the chain's state,
    which only READY (after the peer proved a permitted key) carries."""

    version: int
    chain_id: bytes
    genesis: bytes
    listen_port: int
    pubkey: bytes

    def encode(self) -> bytes:
        w = Writer()
        w.u32(self.version)
        w.fixed(self.chain_id)
        w.fixed(self.genesis)
        w.u16(self.listen_port)
        w.fixed(self.pubkey)
        return w.getvalue()

    @classmethod
    def decode(cls, raw: bytes) -> Hello:
        r = Reader(raw)
        out = cls(r.u32(), r.fixed(32), r.fixed(32), r.u16(), r.fixed(33))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class Ready:
    """The accepting side's chain state, sent only to a peer it accepted."""

    height: int
    tip: bytes

    def encode(self) -> bytes:
        w = Writer()
        w.u32(self.height + 1)  # -1 (no blocks yet) encodes as 0
        w.fixed(self.tip)
        return w.getvalue()

    @classmethod
    def decode(cls, raw: bytes) -> Ready:
        r = Reader(raw)
        out = cls(r.u32() - 1, r.fixed(32))
        r.end()
        return out


def encode_auth(pubkey: bytes, signature: bytes) -> bytes:
    w = Writer()
    w.fixed(pubkey)
    w.var_bytes(signature)
    return w.getvalue()


def decode_auth(raw: bytes) -> tuple[bytes, bytes]:
    r = Reader(raw)
    pub, sig = r.fixed(33), r.var_bytes(80)
    r.end()
    return pub, sig


_INV_KINDS = bytes((Inv.TX, Inv.BLOCK))


def encode_inv(items: list[tuple[int, bytes]]) -> bytes:
    w = Writer()
    w.varint(len(items))
    w.fixed(b"".join([bytes((kind,)) + h for kind, h in items]))
    return w.getvalue()


def decode_inv(raw: bytes) -> list[tuple[int, bytes]]:
    r = Reader(raw)
    n = r.varint()
    if n > MAX_INV:
        raise DecodeError("too many inventory entries")
    # Sliced from one read of all entries (kind, hash): two Reader calls per entry were
    # most of the cost of an INV or GETDATA of a hundred transactions.
    body = r.fixed(n * 33)
    r.end()
    if body[::33].translate(None, _INV_KINDS):
        raise DecodeError("unknown inventory kind")
    return [(body[i], body[i + 1:i + 33]) for i in range(0, n * 33, 33)]


def encode_locator(hashes: list[bytes], limit: int) -> bytes:
    w = Writer()
    w.varint(len(hashes))
    for h in hashes:
        w.fixed(h)
    w.u32(limit)
    return w.getvalue()


def decode_locator(raw: bytes) -> tuple[list[bytes], int]:
    r = Reader(raw)
    n = r.varint()
    if n > MAX_LOCATOR:
        raise DecodeError("locator too long")
    hashes = [r.fixed(32) for _ in range(n)]
    limit = r.u32()
    r.end()
    return hashes, limit


def encode_blocks(peer_height: int, raws: list[bytes]) -> bytes:
    w = Writer()
    w.u32(peer_height + 1)
    w.varint(len(raws))
    for b in raws:
        w.var_bytes(b)
    return w.getvalue()


def decode_blocks(raw: bytes, max_block: int) -> tuple[int, list[bytes]]:
    r = Reader(raw)
    height = r.u32() - 1
    n = r.varint()
    if n > 100_000:
        raise DecodeError("too many blocks in one message")
    out = [r.var_bytes(max_block) for _ in range(n)]
    r.end()
    return height, out


def encode_params(text: str, may_connect: bool) -> bytes:
    w = Writer()
    w.var_bytes(text.encode())
    w.u8(1 if may_connect else 0)
    return w.getvalue()


def decode_params(raw: bytes) -> tuple[str, bool]:
    r = Reader(raw)
    try:
        text = r.var_bytes(1 << 20).decode()
    except UnicodeDecodeError:  # found by bench/fuzz: it escaped the DecodeError handlers
        raise DecodeError("chain parameters are not UTF-8 text") from None
    flag = r.u8()
    r.end()
    return text, flag == 1


def encode_text(text: str) -> bytes:
    w = Writer()
    w.var_bytes(text.encode()[:1000])
    return w.getvalue()


def decode_text(raw: bytes) -> str:
    r = Reader(raw)
    t = r.var_bytes(1000).decode(errors="replace")
    r.end()
    return t


def raw_hash(raw: bytes) -> bytes:
    """What a compact block names a transaction's exact bytes by: the txid covers only the
    unsigned body, and the block must be rebuilt with the very signature the miner had."""
    return hashlib.sha256(raw).digest()


@dataclass(frozen=True, slots=True)
class CompactBlock:
    """A block announced by its header, its miner's signature and, per transaction, its
    txid and the SHA-256 of its raw bytes (BIP 152's idea with full-length ids)."""

    header: BlockHeader
    signature: bytes
    ids: tuple[tuple[bytes, bytes], ...]

    def encode(self) -> bytes:
        w = Writer()
        w.fixed(self.header.encode())
        w.fixed(self.signature)
        w.varint(len(self.ids))
        w.fixed(b"".join(txid + rh for txid, rh in self.ids))
        return w.getvalue()

    @classmethod
    def decode(cls, raw: bytes) -> CompactBlock:
        r = Reader(raw)
        header = BlockHeader.decode_from(r)
        signature = r.fixed(65)
        n = r.varint()
        if n > MAX_BLOCK_TXS or n * 64 > r.remaining():
            raise DecodeError("impossible transaction count in a compact block")
        # The (txid, raw hash) pairs are sliced from one read of all of them: two Reader
        # calls per transaction were most of the decoding of a block of small txs.
        body = r.fixed(n * 64)
        ids = tuple((body[i:i + 32], body[i + 32:i + 64]) for i in range(0, n * 64, 64))
        r.end()
        return cls(header, signature, ids)


def encode_getblocktxn(block_hash: bytes, indexes: list[int]) -> bytes:
    w = Writer()
    w.fixed(block_hash)
    w.varint(len(indexes))
    for i in indexes:
        w.u32(i)
    return w.getvalue()


def decode_getblocktxn(raw: bytes) -> tuple[bytes, list[int]]:
    r = Reader(raw)
    h = r.fixed(32)
    n = r.varint()
    if n > MAX_BLOCK_TXS or n * 4 > r.remaining():
        raise DecodeError("too many transaction indexes")
    indexes = [r.u32() for _ in range(n)]
    r.end()
    return h, indexes


def encode_blocktxn(block_hash: bytes, raws: list[bytes]) -> bytes:
    w = Writer()
    w.fixed(block_hash)
    w.varint(len(raws))
    for t in raws:
        w.var_bytes(t)
    return w.getvalue()


def decode_blocktxn(raw: bytes, max_size: int) -> tuple[bytes, list[bytes]]:
    r = Reader(raw)
    h = r.fixed(32)
    n = r.varint()
    if n > MAX_BLOCK_TXS or n > r.remaining():
        raise DecodeError("impossible transaction count")
    out = [r.var_bytes(max_size) for _ in range(n)]
    r.end()
    return h, out
