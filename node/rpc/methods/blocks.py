"""Blocks, transactions and the mempool: getblock*, listblocks, getrawtransaction, …"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ledger.blocks import HEADER_SIZE, Block, BlockHeader
from ledger.codec import Reader
from ledger.errors import BlockNotFound, DecodeError
from ledger.transactions import CreateStream, Publish, Transaction
from node.rpc.dispatch import MethodTable
from node.rpc.errors import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_PARAMETER,
    RPC_MISC_ERROR,
    RPC_OUTPUT_NOT_DATA,
    RPC_OUTPUT_NOT_FOUND,
    RPC_TX_NOT_FOUND,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RpcError,
)
from node.rpc.methods import register
from node.rpc.params import as_bool, as_int, given
from node.views import create_entry, full_data, op_view, vin_view

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_LISTED_BLOCKS = 100_000
"""Most blocks one block set may name, all its parts together (issue 15.3)."""
MAX_BLOCK_SET_PARTS = 1_000
"""Most heights, hashes and ranges in one block set: 10,000 ranges stalled a node for 20 s."""


def _height_of(ctx: Any, ident: Any) -> int:
    """A block given as a height (number or short numeric string) or a 64-hex hash."""
    tip = ctx.chain.height
    # MultiChain 2.3 (getblock in rpcblockchain.cpp): anything that is neither a known hash
    # nor a height 0..tip, including a negative or non-numeric one, is RPC_BLOCK_NOT_FOUND.
    if isinstance(ident, bool):
        raise BlockNotFound("Block not found")
    if isinstance(ident, int):
        h = ident
    elif isinstance(ident, str) and _HEX64.match(ident):
        row = ctx.store.block_row(hash_hex=ident.lower())
        if row is None:
            raise BlockNotFound("Block not found")
        return row.height
    elif isinstance(ident, str) and re.fullmatch(r"\d{1,63}", ident):
        h = int(ident)
    else:
        raise BlockNotFound("Block not found")
    if not 0 <= h <= tip:
        raise BlockNotFound("Block height out of range")
    return h


def parse_block_set(ctx: Any, spec: Any) -> list[int]:
    """Heights named by MultiChain's block-set syntax: height, hash, "a-b", -N (last N),
    comma list, array, or {"starttime", "endtime"}."""
    tip = ctx.chain.height
    if isinstance(spec, dict):
        try:
            start, end = int(spec["starttime"]), int(spec["endtime"])
        except (KeyError, TypeError, ValueError):
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid time range") from None
        return [r.height for r in ctx.store.blocks_in_time(start, end)]
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            return list(range(max(0, tip + 1 + spec), tip + 1))
        return [_height_of(ctx, spec)]
    parts: list[Any]
    if isinstance(spec, list):
        parts = spec
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        raise RpcError(RPC_INVALID_PARAMETER, "Invalid block set")
    if len(parts) > MAX_BLOCK_SET_PARTS:
        raise RpcError(RPC_INVALID_PARAMETER, f"Too many block ranges or heights: {len(parts)} "
                       f"(at most {MAX_BLOCK_SET_PARTS} in one call)")
    out: list[int] = []
    for p in parts:
        if isinstance(p, str) and re.fullmatch(r"\d{1,18}-\d{1,18}", p):
            a, b = (int(x) for x in p.split("-"))
            if b < a or b - a > MAX_LISTED_BLOCKS:
                raise RpcError(RPC_INVALID_PARAMETER, f"Invalid block range: {p}")
            out.extend(range(a, min(b, tip) + 1))
        elif isinstance(p, str) and re.fullmatch(r"-\d{1,18}", p):
            out.extend(range(max(0, tip + 1 + int(p)), tip + 1))
        elif type(p) is int and p < 0:
            out.extend(range(max(0, tip + 1 + p), tip + 1))
        else:
            out.append(_height_of(ctx, p))
        if len(out) > MAX_LISTED_BLOCKS:
            raise RpcError(RPC_INVALID_PARAMETER, "Too many blocks in one call "
                           f"(at most {MAX_LISTED_BLOCKS}); ask for fewer ranges")
    return sorted(set(out))


BITS = "1d00ffff"
DIFFICULTY = 6e-08


def chainwork(height: int) -> str:
    """The chain work up to a block, as getblockchaininfo shows it: one unit per block."""
    return f"{height + 1:064x}"


def block_summary(ctx: Any, row: Any) -> dict[str, Any]:
    return {"hash": row.hash, "miner": row.miner,
            "confirmations": ctx.chain.height - row.height + 1, "height": row.height,
            "time": row.time_s, "txcount": row.txcount}


def _tx_location(ctx: Any, txid: str) -> tuple[Transaction, int | None, int | None]:
    row = ctx.store.tx_row(txid)
    if row is not None:
        return Transaction.decode(row.raw), row.height, row.blockindex
    entry = ctx.mempool.entries.get(bytes.fromhex(txid))
    if entry is not None:
        return entry.tx, None, None
    raise RpcError(RPC_TX_NOT_FOUND, "No information available about transaction")


def tx_view(ctx: Any, tx: Transaction, height: int | None = None,
            verbose_extra: bool = True, *, with_hex: bool = True,
            block_fields: bool = True) -> dict[str, Any]:
    """A transaction decoded like `getrawtransaction txid 1` (TxToJSON, rpcrawtransaction.cpp):
    hex, txid, version, locktime, vin, vout, create, data, then the block fields."""
    txid = tx.txid.hex()
    sender = ctx.codec.encode(tx.sender_hash)
    streams = ctx.mempool.state.streams
    max_shown = int(ctx.setting("maxshowndata"))
    out: dict[str, Any] = {"hex": tx.raw.hex()} if with_hex else {}
    out.update({
        "txid": txid,
        "version": tx.version,
        "locktime": 0,
        "vin": [vin_view(sender, tx.sender, tx.signature, tx.nonce)],
        "vout": [op_view(op, n, address_of=ctx.codec.encode, stream_of=streams.get, txid=txid,
                         max_shown=max_shown, sender=sender, tx_time=tx.time)
                 for n, op in enumerate(tx.ops)],
    })
    creates = [op for op in tx.ops if isinstance(op, CreateStream)]
    if creates:
        info = streams.get(tx.txid)
        out["create"] = create_entry(creates[0], (info.streamref or None) if info else None)
    data = [v["data"][0] for v in out["vout"] if "data" in v]
    if data:
        out["data"] = data
    if not block_fields:
        return out
    if height is not None:
        conf = ctx.chain.height - height + 1
        out["blockhash"] = ctx.hash_at(height)
        out["confirmations"] = conf
        out["time"] = tx.time
        out["blocktime"] = ctx.store.block_row(height).time_s
        out["final"] = conf >= ctx.chain.final_depth()
    else:
        out["confirmations"] = 0
        out["time"] = tx.time
        out["final"] = False
    return out


def _decode_hex_tx(value: Any) -> Transaction:
    """A serialized chainmill transaction from hex; bad hex or bytes are -22 (TX decode failed)."""
    if not isinstance(value, str) or len(value) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", value):
        raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed")
    try:
        return Transaction.decode(bytes.fromhex(value))
    except DecodeError:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed") from None


def register_methods(table: MethodTable, ctx: Any) -> None:
    def getblockcount(p: list) -> int:
        return ctx.chain.height

    def getbestblockhash(p: list) -> str:
        return ctx.hash_at(ctx.chain.height)

    def getblockhash(p: list) -> str:
        if type(p[0]) is not int:
            # MultiChain's params[0].get_int(): a JSON type error, RPC_MISC_ERROR.
            raise RpcError(RPC_MISC_ERROR, "JSON value is not an integer as expected")
        h = p[0]
        if not 0 <= h <= ctx.chain.height:
            raise BlockNotFound("Block height out of range")
        return ctx.hash_at(h)

    def getblock(p: list) -> Any:
        h = _height_of(ctx, p[0])
        verbose = p[1] if given(p, 1) else 1
        if isinstance(verbose, bool):
            level = int(verbose)
        elif isinstance(verbose, int) and 0 <= verbose <= 4:
            level = verbose
        else:
            raise RpcError(RPC_INVALID_PARAMETER, "verbose must be a boolean or 0 to 4")
        raw = ctx.store.block_raw(h)
        if level == 0:
            return raw.hex()
        block = Block.decode(raw)
        row = ctx.store.block_row(h)
        out: dict[str, Any] = {
            "hash": row.hash, "miner": row.miner,
            "confirmations": ctx.chain.height - h + 1, "size": row.size, "height": h,
            "version": block.header.version, "merkleroot": block.header.merkle_root.hex(),
        }
        # blockToJSON in rpcblockchain.cpp: the tx entries of each verbose level.
        if level == 1:
            out["tx"] = [t.txid.hex() for t in block.txs]
        elif level == 2:
            out["tx"] = [{"txid": t.txid.hex(), "hex": t.raw.hex()} for t in block.txs]
        elif level == 3:
            out["tx"] = [{"txid": t.txid.hex(), "version": t.version, "locktime": 0,
                          "hex": t.raw.hex()} for t in block.txs]
        else:
            # TxToJSON(tx, uint256(0), ...) then "hex": no block fields per transaction.
            out["tx"] = [tx_view(ctx, t, with_hex=False, block_fields=False)
                         | {"hex": t.raw.hex()} for t in block.txs]
        out.update({"time": row.time_s, "nonce": 0, "bits": BITS,
                    "difficulty": DIFFICULTY, "chainwork": chainwork(h)})
        if h > 0:
            out["previousblockhash"] = row.prev_hash
        if h < ctx.chain.height:
            out["nextblockhash"] = ctx.hash_at(h + 1)
        return out

    def getlastblockinfo(p: list) -> dict:
        skip = as_int(p[0], "skip") if given(p, 0) else 0
        h = ctx.chain.height - skip
        if skip < 0 or h < 0:
            raise BlockNotFound("Block height out of range")
        row = ctx.store.block_row(h)
        return {"hash": row.hash, "height": h, "time": row.time_s, "txcount": row.txcount,
                "miner": row.miner}

    def list_blocks(p: list) -> list:
        heights = parse_block_set(ctx, p[0])
        verbose = as_bool(p[1], "verbose") if given(p, 1) else False
        rows = ctx.store.block_rows(heights)
        out = []
        tip = ctx.chain.height
        listed = {r.height: r.hash for r in rows}
        for r in rows:
            s = block_summary(ctx, r)
            if verbose:
                # blockToJSONForListBlocks in rpcblockchain.cpp, in its order.
                # Only the fixed-size header is decoded: up to MAX_LISTED_BLOCKS of them.
                header = BlockHeader.decode_from(
                    Reader(ctx.store.block_raw(r.height)[:HEADER_SIZE]))
                s.update({"size": r.size, "version": header.version,
                          "merkleroot": header.merkle_root.hex(), "nonce": 0, "bits": BITS,
                          "difficulty": DIFFICULTY, "chainwork": chainwork(r.height)})
                if r.height > 0:
                    s["previousblockhash"] = r.prev_hash
                if r.height < tip:
                    s["nextblockhash"] = listed.get(r.height + 1) or ctx.hash_at(r.height + 1)
            out.append(s)
        return out

    async def listblocks(p: list) -> list:
        # Up to MAX_LISTED_BLOCKS rows: read and shaped in a worker thread so that other
        # clients keep their answers meanwhile (the store opens a connection per call).
        return await asyncio.to_thread(list_blocks, p)

    def getrawtransaction(p: list) -> Any:
        txid = p[0]
        if not isinstance(txid, str) or not _HEX64.match(txid):
            raise RpcError(RPC_INVALID_PARAMETER, "txid must be a 64-character hex string")
        verbose = p[1] if given(p, 1) else 0
        if not isinstance(verbose, (bool, int)):
            raise RpcError(RPC_INVALID_PARAMETER, "verbose must be a boolean or a number")
        tx, height, _ = _tx_location(ctx, txid.lower())
        if not verbose:
            return tx.raw.hex()
        return tx_view(ctx, tx, height)

    def gettxoutdata(p: list) -> Any:
        txid = p[0]
        if not isinstance(txid, str) or not _HEX64.match(txid):
            raise RpcError(RPC_INVALID_PARAMETER, "txid must be a 64-character hex string")
        vout = as_int(p[1], "vout")
        tx, _, _ = _tx_location(ctx, txid.lower())
        if not 0 <= vout < len(tx.ops):
            raise RpcError(RPC_OUTPUT_NOT_FOUND, "Output not found")
        op = tx.ops[vout]
        if not isinstance(op, Publish):
            raise RpcError(RPC_OUTPUT_NOT_DATA, "Output without metadata")
        start = as_int(p[3], "start-byte") if given(p, 3) else 0
        count = as_int(p[2], "count-bytes") if given(p, 2) else len(op.data)
        if start < 0 or count < 0 or start > len(op.data):
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid start-byte or count-bytes")
        if op.fmt == 0 or given(p, 2):
            return op.data[start:start + count].hex()
        return full_data(int(op.fmt), op.data)

    def getmempoolinfo(p: list) -> dict:
        return {"size": len(ctx.mempool), "bytes": ctx.mempool.bytes}

    def getrawmempool(p: list) -> Any:
        verbose = as_bool(p[0], "verbose") if given(p, 0) else False
        if not verbose:
            return [t.hex() for t in ctx.mempool.entries]
        h = ctx.chain.height
        return {t.hex(): {"size": e.tx.size, "fee": 0.0, "time": int(e.received), "height": h,
                          "startingpriority": 0.0, "currentpriority": 0.0, "depends": []}
                for t, e in ctx.mempool.entries.items()}

    def decoderawtransaction(p: list) -> dict:
        tx = _decode_hex_tx(p[0])
        return tx_view(ctx, tx, with_hex=False, block_fields=False)

    def sendrawtransaction(p: list) -> str:
        tx = _decode_hex_tx(p[0])
        if given(p, 1):
            as_bool(p[1], "allowhighfees")
        if ctx.store.tx_row(tx.txid.hex()) is not None:
            raise RpcError(RPC_VERIFY_ALREADY_IN_CHAIN, "transaction already in block chain")
        if tx.txid in ctx.mempool.entries:
            return tx.txid.hex()
        # Signature, permissions and structure are checked by the mempool as for any
        # transaction a peer relays; a refusal is -26 and changes nothing.
        ctx.submit_tx(tx, local=True, verified=False)
        return tx.txid.hex()

    def getchaintips(p: list) -> list:
        tip = ctx.chain.height
        return [{"height": tip, "hash": ctx.hash_at(tip), "branchlen": 0, "status": "active"}]

    def gettxoutsetinfo(p: list) -> dict:
        tip = ctx.chain.height
        return {"height": tip, "bestblock": ctx.hash_at(tip), "transactions": 0, "txouts": 0,
                "bytes_serialized": 0, "hash_serialized": "0" * 64, "total_amount": 0.0}

    def getchunkqueueinfo(p: list) -> dict:
        zero = {"waiting": 0, "querying": 0, "retrieving": 0}
        return {"chunks": dict(zero), "bytes": dict(zero)}

    def getchunkqueuetotals(p: list) -> dict:
        zero = {"queries": 0, "requests": 0, "responses": 0, "errors": 0,
                "baddelivered": 0, "badresponses": 0, "unresponded": 0, "undelivered": 0}
        return {"chunks": dict(zero), "bytes": dict(zero)}

    for name, fn in [
        ("decoderawtransaction", decoderawtransaction),
        ("sendrawtransaction", sendrawtransaction), ("getchaintips", getchaintips),
        ("gettxoutsetinfo", gettxoutsetinfo), ("getchunkqueueinfo", getchunkqueueinfo),
        ("getchunkqueuetotals", getchunkqueuetotals),
        ("getblockcount", getblockcount), ("getbestblockhash", getbestblockhash),
        ("getblockhash", getblockhash), ("getblock", getblock),
        ("getlastblockinfo", getlastblockinfo), ("listblocks", listblocks),
        ("getrawtransaction", getrawtransaction), ("gettxoutdata", gettxoutdata),
        ("getmempoolinfo", getmempoolinfo), ("getrawmempool", getrawmempool),
    ]:
        register(table, name, fn)
