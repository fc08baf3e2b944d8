"""Valid seed inputs for the mutating strategies, built with the product's own encoders."""

from __future__ import annotations

from ledger.blocks import Block
from ledger.keys import KeyPair
from ledger.transactions import CreateStream, DataFormat, Permission, Publish, Transaction
from node.p2p import messages as m
from node.p2p.framing import encode_frame

CHAIN_ID = bytes(range(32))
MAGIC = b"\xf1\xe2\xd3\xc4"
KEY = KeyPair((7).to_bytes(32, "big"))
STREAM = bytes(range(1, 33))


def transactions() -> list[Transaction]:
    ops = [
        [Publish(STREAM, ("k1", "k2"), DataFormat.JSON, b'{"a":1}')],
        [Publish(STREAM, (), DataFormat.RAW, bytes(300), True)],
        [CreateStream("orders", 1, True, b'{"plant":"north"}')],
        [Permission(bytes(20), b"", 2 | 4, 0, 4294967295)],
        [Permission(bytes(20), STREAM, 1 << 14, 5, 10),
         Publish(STREAM, ("é",), DataFormat.TEXT, "ü".encode())],
    ]
    return [Transaction.create(KEY, o, CHAIN_ID, 1_700_000_000 + i, nonce=i)
            for i, o in enumerate(ops)]


def tx_seeds() -> list[bytes]:
    return [t.raw for t in transactions()]


def block_seeds() -> list[bytes]:
    txs = transactions()
    blocks = [Block.build(KEY, CHAIN_ID, 0, bytes(32), 1_700_000_000_000, []),
              Block.build(KEY, CHAIN_ID, 5, bytes(range(32)), 1_700_000_000_123, txs[:2]),
              Block.build(KEY, CHAIN_ID, 9, bytes(32), 1_700_000_000_999, txs)]
    return [b.raw for b in blocks]


def frame_seeds() -> list[bytes]:
    return [encode_frame(MAGIC, t, p) for t, p in
            [(0, b""), (1, b"hello"), (7, bytes(100)), (3, block_seeds()[1])]]


def handshake_seeds() -> list[tuple[str, bytes]]:
    """Valid payloads of every P2P message type that has a decoder (node/p2p/messages.py)."""
    hello = m.Hello(m.PROTOCOL, CHAIN_ID, bytes(32), 7447, KEY.pubkey)
    sig = KEY.sign(bytes(32))
    return [
        ("hello", hello.encode()),
        ("auth", m.encode_auth(KEY.pubkey, sig)),
        ("ready", m.Ready(-1, bytes(32)).encode()),
        ("ready", m.Ready(41, bytes(range(32))).encode()),
        ("inv", m.encode_inv([(1, bytes(32)), (2, bytes(range(32)))])),
        ("locator", m.encode_locator([bytes(32)] * 3, 500)),
        ("blocks", m.encode_blocks(4, block_seeds()[:2])),
        ("params", m.encode_params("chain-name = x\n", True)),
        ("text", m.encode_text("bad block")),
    ]


def compact_seeds() -> list[bytes]:
    """CMPCTBLOCK payloads: the seed blocks (no, two and five transactions) as compact blocks."""
    blocks = [Block.decode(raw) for raw in block_seeds()]
    return [m.CompactBlock(b.header, b.signature,
                           tuple((t.txid, m.raw_hash(t.raw)) for t in b.txs)).encode()
            for b in blocks]


def getblocktxn_seeds() -> list[bytes]:
    """GETBLOCKTXN payloads: no index, one, several, the largest u32 and a 3-byte varint."""
    h = Block.decode(block_seeds()[2]).hash
    return [m.encode_getblocktxn(h, idx) for idx in
            ([], [0], [0, 2, 4], [4, 1], [0xFFFFFFFF], list(range(300)))]


def blocktxn_seeds() -> list[bytes]:
    """BLOCKTXN payloads: none, one and every seed transaction, and one over 252 bytes (a
    3-byte length prefix)."""
    h = Block.decode(block_seeds()[2]).hash
    raws = tx_seeds()
    return [m.encode_blocktxn(h, r) for r in ([], raws[:1], raws, [raws[1]])]


def transport_messages() -> list[list[tuple[int, bytes]]]:
    """Message sequences to seal as transport records: small, empty, several, and one that
    spans two records (a payload longer than one record's 65,519 bytes)."""
    hello = m.Hello(m.PROTOCOL, CHAIN_ID, bytes(32), 7447, KEY.pubkey).encode()
    return [
        [(m.Msg.HELLO, hello)],
        [(m.Msg.PING, b"")],
        [(m.Msg.HELLO, hello), (m.Msg.AUTH, m.encode_auth(KEY.pubkey, KEY.sign(bytes(32)))),
         (m.Msg.READY, m.Ready(3, bytes(32)).encode())],
        [(m.Msg.TX, tx_seeds()[0]), (m.Msg.INV, m.encode_inv([(1, bytes(32))]))],
        [(m.Msg.BLOCK, bytes(70_000))],
    ]


XML_SEEDS = [
    b"<doc><table>orders</table><row><id>1</id><qty>5</qty></row></doc>",
    b"<?xml version='1.0' encoding='UTF-8'?><a><b>text &amp; more</b><c/></a>",
    b"<a><![CDATA[x < y]]><!-- note --><?pi x?></a>",
    b"<root>" + b"<n>" * 70 + b"</n>" * 70 + b"</root>",
]
