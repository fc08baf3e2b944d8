"""Transactions: plain types, canonical encoding, txid and signature.

A transaction is signed by one address (its sender) and carries one or more operations:
create a stream, publish an item, or change a permission. The txid is the double SHA-256 of
the unsigned body, which includes a random 64-bit nonce; the signature covers the txid and the
chain id, so a transaction can be neither replayed on this chain (the same txid is refused) nor
on another chain (the signature does not verify there). DER signatures from libsecp256k1 are
low-S only, so a third party cannot make a second valid signature for the same body.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from ledger.codec import Reader, Writer, encode_varint
from ledger.errors import DecodeError, TxLimitExceeded
from ledger.hashing import hash160, sha256d
from ledger.keys import MAX_DER_SIGNATURE, KeyPair, verify
from ledger.types import Hash32, PubKeyHash

TX_VERSION = 1
MAX_OPS = 100_000
MAX_KEY_BYTES = 256
MAX_KEYS = 1024
MAX_DATA_BYTES = 64 * 1024 * 1024
MAX_NAME_BYTES = 32
MAX_DETAILS_BYTES = 64 * 1024
NO_END = 4294967295
MIN_DER_SIGNATURE = 8
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1
_PERM_MASK = (1 << 16) - 1
_RESTRICT_MASK = 0x0F
_NONCE_TIME = struct.Struct("<QI")
_SENDER_NONCE_TIME = struct.Struct("<33sQI")


class OpKind(IntEnum):
    CREATE_STREAM = 1
    PUBLISH = 2
    PERMISSION = 3


class DataFormat(IntEnum):
    RAW = 0
    TEXT = 1
    JSON = 2


FORMAT_NAMES = {DataFormat.RAW: "raw", DataFormat.TEXT: "text", DataFormat.JSON: "json"}

# Permission bits. Global permissions apply when an operation's entity is empty; stream
# permissions (write, read, activate, admin) when it names a stream's creation txid.
PERM_BITS: dict[str, int] = {
    "connect": 1 << 0,
    "send": 1 << 1,
    "receive": 1 << 2,
    "issue": 1 << 3,
    "create": 1 << 4,
    "mine": 1 << 5,
    "activate": 1 << 6,
    "admin": 1 << 7,
    "high1": 1 << 8,
    "high2": 1 << 9,
    "high3": 1 << 10,
    "low1": 1 << 11,
    "low2": 1 << 12,
    "low3": 1 << 13,
    "write": 1 << 14,
    "read": 1 << 15,
}
GLOBAL_PERMS = (
    "connect", "send", "receive", "issue", "create", "mine", "activate", "admin",
    "high1", "high2", "high3", "low1", "low2", "low3",
)
STREAM_PERMS = ("write", "read", "activate", "admin")
ALL_GLOBAL_BITS = sum(PERM_BITS[p] for p in GLOBAL_PERMS)
# What the genesis address receives: MultiChain's "all regular global permissions".
GENESIS_PERMS = ("connect", "send", "receive", "issue", "create", "mine", "activate", "admin")

RESTRICT_WRITE = 1
RESTRICT_READ = 2
RESTRICT_ONCHAIN = 4
RESTRICT_OFFCHAIN = 8


def perm_names(bits: int, scope: tuple[str, ...] = GLOBAL_PERMS + STREAM_PERMS) -> list[str]:
    return [p for p in scope if bits & PERM_BITS[p]]


@dataclass(frozen=True, slots=True)
class CreateStream:
    """Create a stream. `name` may be empty (a nameless stream); `details` is canonical JSON."""

    name: str
    restrict: int
    salted: bool = False
    details: bytes = b"{}"
    kind = OpKind.CREATE_STREAM


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish one item on the stream whose creation txid is `stream`."""

    stream: bytes
    keys: tuple[str, ...]
    fmt: DataFormat
    data: bytes
    offchain: bool = False
    kind = OpKind.PUBLISH


class _PublishSlots:
    """A plain class with exactly Publish's slots, for `new_publish`."""

    __slots__ = Publish.__slots__


def new_publish(stream: bytes, keys: tuple[str, ...], fmt: DataFormat, data: bytes,
                offchain: bool = False) -> Publish:
    """`Publish(stream, keys, fmt, data, offchain)` at a third of the cost, for the builders
    and decoders (one Publish per item made or decoded).

    A frozen dataclass's generated __init__ sets each field through object.__setattr__
    (9.1k instructions per Publish). Here the fields are stored on a plain object of the
    same slots, which is then made a Publish by `__class__` assignment (Python allows it
    between classes of the same slots, and the result is a Publish like any other: equal,
    hashed and frozen as one): 2.9k."""
    op = _PublishSlots()
    op.stream = stream
    op.keys = keys
    op.fmt = fmt
    op.data = data
    op.offchain = offchain
    op.__class__ = Publish  # type: ignore[assignment]
    return op  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Permission:
    """Set `perms` of `address` (on `entity`, a stream's creation txid, or globally when empty)
    to the block range [start, end); a revoke is the empty range (0, 0)."""

    address: bytes
    entity: bytes
    perms: int
    start: int
    end: int
    kind = OpKind.PERMISSION

    @property
    def is_revoke(self) -> bool:
        return self.start == 0 and self.end == 0


Op = CreateStream | Publish | Permission


def publishes_only(ops: tuple[Op, ...]) -> bool:
    """Every operation is a Publish: such a transaction reads the chain state and changes
    none of it. A loop, not all() over a generator: the pool, the miner and the block checks
    ask it of every transaction."""
    for op in ops:
        if not isinstance(op, Publish):
            return False
    return True


_BYTE = tuple(bytes((i,)) for i in range(256))
"""One-byte encodings: a u8 of value i, and the varint of i below 0xFD."""
_PUBLISH_BYTE = bytes((OpKind.PUBLISH,))


def _encode_publish(op: Publish) -> bytes:
    """A Publish operation's encoding in one join: the field by field Writer calls below
    cost more than the item itself when a transaction carries many items. The one-byte
    varints (every length under 253) are inlined: a call each was a tenth of the encoding."""
    keys = op.keys
    data = op.data
    n = len(keys)
    parts = [_PUBLISH_BYTE, op.stream, _BYTE[n] if n < 0xFD else encode_varint(n)]
    for k in keys:
        b = k.encode()
        n = len(b)
        parts.append(_BYTE[n] if n < 0xFD else encode_varint(n))
        parts.append(b)
    # The format and the flag: not _BYTE[]: a stray negative format must raise.
    parts.append(bytes((op.fmt, 1 if op.offchain else 0)))
    n = len(data)
    parts.append(_BYTE[n] if n < 0xFD else encode_varint(n))
    parts.append(data)
    return b"".join(parts)


def _encode_op_bytes(op: Op) -> bytes:
    """One operation's encoding (a Publish without a Writer)."""
    if type(op) is Publish:
        return _encode_publish(op)
    w = Writer()
    _encode_op(w, op)
    return w.getvalue()


def _encode_op(w: Writer, op: Op) -> None:
    if isinstance(op, Publish):
        w.fixed(_encode_publish(op))
        return
    w.u8(op.kind)
    if isinstance(op, CreateStream):
        w.var_bytes(op.name.encode())
        w.u8(op.restrict)
        w.u8(1 if op.salted else 0)
        w.var_bytes(op.details)
    else:
        w.fixed(op.address)
        w.var_bytes(op.entity)
        w.u32(op.perms)
        w.u32(op.start)
        w.u32(op.end)


def _flag(r: Reader) -> bool:
    v = r.u8()
    if v > 1:
        raise DecodeError("flag must be 0 or 1")
    return v == 1


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not UTF-8") from None


_FORMATS = tuple(DataFormat)
"""DataFormat by its number (a tuple index costs a fraction of an enum lookup)."""


_PUBLISH = int(OpKind.PUBLISH)


def _decode_op(r: Reader) -> Op:
    kind = r.u8()
    if kind == _PUBLISH:  # nearly every op received: one key and the flag without a call
        stream = r.fixed(32)
        nkeys = r.varint()
        if nkeys > MAX_KEYS:
            raise DecodeError("too many keys")
        if nkeys == 1:
            keys: tuple[str, ...] = (_text(r.var_bytes(MAX_KEY_BYTES), "key"),)
        else:
            keys = tuple([_text(r.var_bytes(MAX_KEY_BYTES), "key") for _ in range(nkeys)])
        fmt = r.u8()
        if fmt >= len(_FORMATS):
            raise DecodeError("unknown data format")
        offchain = r.u8()
        if offchain > 1:
            raise DecodeError("flag must be 0 or 1")
        data = r.var_bytes(MAX_DATA_BYTES)
        return new_publish(stream, keys, _FORMATS[fmt], data, offchain == 1)
    if kind == OpKind.CREATE_STREAM:
        name = _text(r.var_bytes(MAX_NAME_BYTES), "stream name")
        restrict = r.u8()
        if restrict & ~0x0F:
            raise DecodeError("unknown stream restriction bits")
        salted = _flag(r)
        details = r.var_bytes(MAX_DETAILS_BYTES)
        return CreateStream(name, restrict, salted, details)
    if kind == OpKind.PERMISSION:
        address = r.fixed(20)
        entity = r.var_bytes(32)
        if len(entity) not in (0, 32):
            raise DecodeError("permission entity must be empty or 32 bytes")
        perms = r.u32()
        if perms == 0 or perms & ~((1 << 16) - 1):
            raise DecodeError("bad permission bits")
        return Permission(address, entity, perms, r.u32(), r.u32())
    raise DecodeError(f"unknown operation kind {kind}")

# -- structural limits ----------------------------------------------------------------------------
# The one set of limits of the encoding, `check_structure`. `Transaction.create` applies it before
# signing, and consensus applies it in `apply_tx` (mempool admission, the miner's re-check,
# `connect_block`). `Transaction.decode` applies the same limits as it reads (bounded reads that
# refuse oversize fields before allocating them; the custom fields' UTF-8 once the whole
# transaction is read) and marks what it returns as checked. So a transaction that can be built,
# pooled, mined or connected always decodes again: a block cannot become undecodable.

def _limit(msg: str) -> TxLimitExceeded:
    return TxLimitExceeded(msg)


def _utf8_len(value: object, what: str, limit: int) -> int:
    if not isinstance(value, str):
        raise _limit(f"{what} must be a string")
    try:
        n = len(value.encode())
    except UnicodeEncodeError:
        raise _limit(f"{what} is not valid Unicode text (lone surrogate)") from None
    if n > limit:
        raise _limit(f"{what} of {n} bytes exceeds the limit of {limit} bytes")
    return n


def _check_bytes(value: object, what: str, *, size: int | None = None,
                 limit: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise _limit(f"{what} must be bytes")
    if size is not None and len(value) != size:
        raise _limit(f"{what} must be {size} bytes")
    if limit is not None and len(value) > limit:
        raise _limit(f"{what} of {len(value)} bytes exceeds the limit of {limit} bytes")


def _check_int(value: object, what: str, low: int, high: int) -> None:
    if type(value) is bool or not isinstance(value, int) or not low <= value <= high:
        raise _limit(f"{what} must be an integer from {low} to {high}")


def _check_flag(value: object, what: str) -> None:
    if not isinstance(value, bool):
        raise _limit(f"{what} must be true or false")


def _check_details(details: bytes) -> None:
    try:
        details.decode()
    except UnicodeDecodeError:
        raise _limit("stream custom fields are not UTF-8") from None


def check_op(op: object) -> None:
    """One operation within the limits of the encoding; raises TxLimitExceeded."""
    if type(op) is Publish and _plain_publish(op):
        return
    if isinstance(op, Publish):
        _check_bytes(op.stream, "stream reference", size=32)
        if not isinstance(op.keys, tuple):
            raise _limit("item keys must be a tuple")
        if len(op.keys) > MAX_KEYS:
            raise _limit(f"an item has {len(op.keys)} keys; at most {MAX_KEYS} are allowed")
        for k in op.keys:
            # Fast path: short ASCII text (no surrogates, one byte per character).
            if not (type(k) is str and len(k) <= MAX_KEY_BYTES and k.isascii()):
                _utf8_len(k, "item key", MAX_KEY_BYTES)
        _check_int(op.fmt, "data format", 0, 2)
        _check_flag(op.offchain, "offchain flag")
        _check_bytes(op.data, "item data", limit=MAX_DATA_BYTES)
    elif isinstance(op, CreateStream):
        _utf8_len(op.name, "stream name", MAX_NAME_BYTES)
        _check_int(op.restrict, "stream restrictions", 0, _RESTRICT_MASK)
        _check_flag(op.salted, "salted flag")
        _check_bytes(op.details, "stream custom fields", limit=MAX_DETAILS_BYTES)
        _check_details(op.details)
    elif isinstance(op, Permission):
        _check_bytes(op.address, "permission address", size=20)
        _check_bytes(op.entity, "permission entity")
        if len(op.entity) not in (0, 32):
            raise _limit("permission entity must be empty or 32 bytes")
        _check_int(op.perms, "permission bits", 1, _PERM_MASK)
        _check_int(op.start, "permission start block", 0, _U32_MAX)
        _check_int(op.end, "permission end block", 0, _U32_MAX)
    else:
        raise _limit(f"unknown operation {type(op).__name__}")


def _plain_publish(op: Publish) -> bool:
    """True for an item of exactly the types the builders make, within the limits: the
    usual one, passed by one expression. Anything else (another type, a long or non-ASCII
    key) goes through check_op's field by field checks, which raise saying what is wrong."""
    keys = op.keys
    if not (type(op.stream) is bytes and len(op.stream) == 32
            and type(keys) is tuple and len(keys) <= MAX_KEYS
            and type(op.fmt) is DataFormat  # a member: 0 to 2
            and type(op.offchain) is bool
            and type(op.data) is bytes and len(op.data) <= MAX_DATA_BYTES):
        return False
    for k in keys:  # short ASCII text: no surrogates, one byte per character
        if not (type(k) is str and len(k) <= MAX_KEY_BYTES and k.isascii()):
            return False
    return True


def tx_sighash(chain_id: bytes, txid: bytes) -> bytes:
    """What a transaction's sender signs: its txid bound to the chain (domain-separated)."""
    return hashlib.sha256(b"chainmill-tx" + chain_id + txid).digest()


def check_unsigned(tx: Transaction) -> None:
    """The unsigned body within the limits of the encoding (before signing)."""
    ops = tx.ops
    # The header as the builders make it, in one expression; anything else goes through
    # the checks one by one below, which raise with the first field that is wrong.
    if not (tx.version == TX_VERSION
            and type(tx.sender) is bytes and len(tx.sender) == 33
            and type(tx.nonce) is int and 0 <= tx.nonce <= _U64_MAX
            and type(tx.time) is int and 0 <= tx.time <= _U32_MAX
            and type(ops) is tuple and 1 <= len(ops) <= MAX_OPS):
        _check_header(tx)
    for op in ops:
        check_op(op)


def _check_header(tx: Transaction) -> None:
    if tx.version != TX_VERSION:
        raise _limit(f"unknown transaction version {tx.version}")
    _check_bytes(tx.sender, "sender public key", size=33)
    _check_int(tx.nonce, "nonce", 0, _U64_MAX)
    _check_int(tx.time, "transaction time", 0, _U32_MAX)
    if not isinstance(tx.ops, tuple):
        raise _limit("operations must be a tuple")
    if not 1 <= len(tx.ops) <= MAX_OPS:
        raise _limit(f"a transaction needs 1 to {MAX_OPS} operations, not {len(tx.ops)}")


def check_structure(tx: Transaction) -> None:
    """A signed transaction within every limit the decoder applies; raises TxLimitExceeded.

    The result is remembered on the transaction, so the checks that follow one another
    (decode or build, mempool admission, the miner, connect_block) cost it once."""
    if tx._checked:
        return
    check_unsigned(tx)
    _check_bytes(tx.signature, "signature")
    if not MIN_DER_SIGNATURE <= len(tx.signature) <= MAX_DER_SIGNATURE:
        raise _limit("bad signature length")
    tx._checked = True


@dataclass(slots=True)
class Transaction:
    """A signed transaction. Build with `Transaction.create`, decode with `Transaction.decode`."""

    sender: bytes
    nonce: int
    time: int
    ops: tuple[Op, ...]
    signature: bytes = b""
    version: int = TX_VERSION
    _body: bytes | None = field(default=None, repr=False, compare=False)
    _txid: Hash32 | None = field(default=None, repr=False, compare=False)
    _raw: bytes | None = field(default=None, repr=False, compare=False)
    _sender_hash: PubKeyHash | None = field(default=None, repr=False, compare=False)
    _checked: bool = field(default=False, repr=False, compare=False)
    """check_structure passed (fields are not changed after building, as _body assumes)."""
    _limits_of: object = field(default=None, repr=False, compare=False)
    """The chain rules whose size and count limits the transaction passed (consensus's
    `check_tx_limits`, which remembers them here as check_structure remembers _checked)."""

    def body(self) -> bytes:
        body = self._body
        if body is None:
            # The fields in one join (a Writer call per field cost about as much as
            # hashing the body of a one-item transaction).
            ops = self.ops
            parts = [bytes((self.version,)), self.sender,
                     _NONCE_TIME.pack(self.nonce, self.time),  # u64 nonce, u32 time
                     encode_varint(len(ops))]
            parts += map(_encode_op_bytes, ops)
            body = self._body = b"".join(parts)
        return body

    # The pool, the miner, the block checks and the store read these many times per
    # transaction (txid about 16 times, size 10): once cached, they return the field as it is.
    @property
    def txid(self) -> Hash32:
        txid = self._txid
        if txid is None:
            txid = self._txid = sha256d(self.body())
        return txid

    @property
    def sender_hash(self) -> PubKeyHash:
        h = self._sender_hash
        if h is None:
            h = self._sender_hash = hash160(self.sender)  # remembered per key there
        return h

    @property
    def raw(self) -> bytes:
        raw = self._raw
        if raw is None:
            raw = self._raw = self.body() + bytes((len(self.signature),)) + self.signature
        return raw

    @property
    def size(self) -> int:
        raw = self._raw
        return len(raw if raw is not None else self.raw)

    def sighash(self, chain_id: bytes) -> bytes:
        return tx_sighash(chain_id, self.txid)

    def signature_valid(self, chain_id: bytes) -> bool:
        return verify(self.sender, self.signature, self.sighash(chain_id))

    @classmethod
    def create(cls, key: KeyPair, ops: tuple[Op, ...] | list[Op], chain_id: bytes,
               time: int, nonce: int | None = None) -> Transaction:
        tx = cls(key.pubkey, secrets.randbits(64) if nonce is None else nonce, time, tuple(ops))
        check_unsigned(tx)
        tx._body = _checked_one_item_body(tx)  # None: body() encodes it field by field
        tx.signature = key.sign(tx.sighash(chain_id))
        if not MIN_DER_SIGNATURE <= len(tx.signature) <= MAX_DER_SIGNATURE:
            raise _limit("bad signature length")
        tx._checked = True  # the body was checked above and the signature just now
        tx._sender_hash = key.pubkey_hash
        return tx

    @classmethod
    def decode(cls, raw: bytes) -> Transaction:
        """Strict decoding: truncated input, unknown fields or leftover bytes raise DecodeError."""
        tx = _decode_one_item(cls, raw)
        if tx is not None:
            return tx
        r = Reader(raw)
        version = r.u8()
        if version != TX_VERSION:
            raise DecodeError(f"unknown transaction version {version}")
        sender, nonce, time = r.unpack(_SENDER_NONCE_TIME)
        nops = r.varint()
        if nops == 0 or nops > MAX_OPS:
            raise TxLimitExceeded(f"a transaction needs 1 to {MAX_OPS} operations")
        if nops == 1:  # most transactions (one item per call)
            ops: tuple[Op, ...] = (_decode_op(r),)
        else:
            ops = tuple([_decode_op(r) for _ in range(nops)])
        body_end = r.pos
        siglen = r.u8()
        if not MIN_DER_SIGNATURE <= siglen <= MAX_DER_SIGNATURE:
            raise DecodeError("bad signature length")
        signature = r.fixed(siglen)
        r.end()
        for op in ops:  # the one limit of check_structure that the reads above do not apply
            if type(op) is CreateStream:
                _check_details(op.details)
        raw = bytes(raw)
        tx = cls(sender, nonce, time, ops, signature, version, raw[:body_end], None, raw)
        # The reads above refuse everything check_structure refuses (each field's size and
        # range, UTF-8 text, the op count, the signature length; tests hold the two to the
        # same limits), so the decoded transaction is marked as checked instead of walking
        # its fields a second time (about 15 % of decoding a synced transaction).
        tx._checked = True
        return tx


_ONE_ITEM_HEAD = struct.Struct("<B33sQIBB32sBB")
"""The fixed start of a transaction of one Publish with one key: version, sender, nonce,
time, op count (1), op kind (PUBLISH), stream, key count (1), the key's one-byte length."""
_ONE_ITEM = (TX_VERSION, 1, _PUBLISH, 1)


def _checked_one_item_body(tx: Transaction) -> bytes | None:
    """The body of a transaction that passed `check_unsigned` (so its fields have the
    builders' types and ranges) if it is one Publish with one key (what nearly every
    `publish` call makes): one struct pack and a join, the inverse of `_decode_one_item`.
    The general encoder joins a dozen parts made one by one, about 8,000 instructions more
    per transaction built (cachegrind). None for any other shape, or a key or data of 253
    bytes or more (a longer varint)."""
    ops = tx.ops
    if len(ops) != 1 or type(ops[0]) is not Publish:
        return None
    op = ops[0]
    keys, data = op.keys, op.data
    if len(keys) != 1 or len(data) >= 0xFD:
        return None
    key = keys[0].encode()  # checked: it encodes
    if len(key) >= 0xFD:
        return None
    head = _ONE_ITEM_HEAD.pack(TX_VERSION, tx.sender, tx.nonce, tx.time, 1, _PUBLISH,
                               op.stream, 1, len(key))
    return b"".join((head, key, bytes((op.fmt, 1 if op.offchain else 0, len(data))), data))


def _decode_one_item(cls: type[Transaction], raw: bytes) -> Transaction | None:
    """`Transaction.decode` of the transaction nearly every block and relay carries (one
    Publish, one key, lengths under 0xFD), read at fixed offsets; None for anything else.

    The general decoder reads such a transaction in about twenty Reader calls; here it is
    one struct read and a few slices (a synced block's decode is a quarter of a catching-up
    node's main-process work). It refuses nothing itself: whatever does not have this shape
    or breaks a limit (an unknown format, a bad flag, a signature length, a key that is not
    UTF-8, a short or long input) returns None, and the general decoder then decodes it or
    raises its own precise error. So both accept and refuse exactly the same bytes
    (tests/unit/test_ledger_transactions.py holds them to it)."""
    n = len(raw)
    if n < _ONE_ITEM_HEAD.size or type(raw) is not bytes:
        return None
    version, sender, nonce, time, nops, kind, stream, nkeys, klen = \
        _ONE_ITEM_HEAD.unpack_from(raw)
    if (version, nops, kind, nkeys) != _ONE_ITEM or klen >= 0xFD:
        return None
    pos = _ONE_ITEM_HEAD.size + klen  # the format byte, then offchain, the data's length
    if pos + 3 > n:
        return None
    fmt, offchain, dlen = raw[pos], raw[pos + 1], raw[pos + 2]
    body_end = pos + 3 + dlen
    if fmt >= len(_FORMATS) or offchain > 1 or dlen >= 0xFD or body_end >= n:
        return None
    siglen = raw[body_end]
    if not MIN_DER_SIGNATURE <= siglen <= MAX_DER_SIGNATURE or body_end + 1 + siglen != n:
        return None
    try:
        key = raw[_ONE_ITEM_HEAD.size:pos].decode()
    except UnicodeDecodeError:
        return None
    op = new_publish(stream, (key,), _FORMATS[fmt], raw[pos + 3:body_end], offchain == 1)
    tx = cls(sender, nonce, time, (op,), raw[body_end + 1:], version, raw[:body_end], None,
             raw)
    tx._checked = True  # as the general decoder marks it: the same limits were applied
    return tx
