"""ERP projection benchmark: actions projected per second, and list latency at 100,000 requests.

What is measured (the projection's own cost; the node's paging is measured by bench.publish):

* replay rate: 50,000 final items (agents, partner requests and answers, record updates,
  orders and their answers, a few rejected forgeries) applied by `Projection.apply` in pages
  of 500 (the follower's default), one database transaction per page, as a follower that
  catches up after downtime does;
* the same rate for 100,000 order (action) requests addressed to 20 agents, which then stay
  in the projection for the list measurement;
* list latency: `Erp.list_actions` for random receiving agents, first page (limit 10), a full
  page (limit 100) and a deep page (start 4,000), p50/p99 over 300 calls each;
* the raw coincurve verify rate in the same run, and the replay rates as ratios to it.

    python -m bench.erp [--items 50000] [--requests 100000] [--db sqlite|postgres|mariadb]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import coincurve

from bench.common import REPO, latency_summary, machine_info, measure_verify
from erp.addresses import address_function
from erp.api import Erp
from erp.projection import Item, Projection
from triggers.tools.databases import temporary_database

RESULTS = REPO / "bench" / "results" / "erp.json"
PAGE = 500
ADDRESS_OF = address_function(b"\x00", b"\x00\x00\x00\x00")
T0 = 1_700_000_000

log = logging.getLogger("bench.erp")


def _key(n: int) -> str:
    secret = hashlib.sha256(f"bench-erp-{n}".encode()).digest()
    return coincurve.PrivateKey(secret).public_key.format(compressed=True).hex()


def _act(kind: str, signer: str, n: int, **body: Any) -> dict[str, Any]:
    return {"erp": 1, "action": kind, "signer": signer, "timestamp": T0 + n, **body}


class Workload:
    """Builds items in chain order (ten per block)."""

    def __init__(self, agents: int) -> None:
        self.keys = [_key(n) for n in range(agents)]
        self.items: list[Item] = []

    def add(self, action: dict[str, Any], publisher: str | None = None) -> None:
        n = len(self.items)
        data = json.dumps(action, separators=(",", ":")).encode()
        self.items.append(Item(position=n, txid=hashlib.sha256(str(n).encode()).hexdigest(),
                               vout=0, height=100 + n // 10, blockindex=n % 10,
                               blocktime=T0 + 10**6, data=data,
                               publishers=(publisher or ADDRESS_OF(action["signer"]),)))

    def setup(self) -> list[tuple[str, str]]:
        """Agents, a record type, and one accepted partnership per pair (i, i + half)."""
        for n, k in enumerate(self.keys):
            self.add(_act("CREATE_AGENT", k, n, name=f"company {n}"))
        self.add(_act("CREATE_RECORD_TYPE", self.keys[0], 0, name="pallet", properties=[
            {"name": "weight", "data_type": "INT", "required": True}]))
        half = len(self.keys) // 2
        pairs = []
        for i in range(half):
            erp, mes = self.keys[i], self.keys[i + half]
            rid = f"{i:032x}"
            self.add(_act("CREATE_PARTNER_REQUEST", erp, i, partner_request_id=rid,
                          receiving_agent=mes))
            self.add(_act("ANSWER_PARTNER_REQUEST", mes, i, partner_request_id=rid, response=1))
            pairs.append((erp, mes))
        return pairs


def mixed(items: int) -> list[Item]:
    """`items` items: set-up, then orders, answers, record updates and forgeries."""
    w = Workload(50)
    pairs = w.setup()
    rng = random.Random(7)
    open_orders: list[tuple[str, str]] = []
    owners: list[str] = []
    while len(w.items) < items:
        n = len(w.items)
        roll = rng.random()
        erp, mes = pairs[rng.randrange(len(pairs))]
        if roll < 0.35:
            oid = f"{n:032x}"
            w.add(_act("CREATE_ACTION", erp, n, abs_action_id=oid, receiving_agent=mes,
                       type="production_order", description="bench",
                       metadata={"Part": "steering wheel", "Qty": n % 100}, files=[]))
            open_orders.append((oid, mes))
        elif roll < 0.6 and open_orders:
            oid, mes = open_orders.pop(rng.randrange(len(open_orders)))
            w.add(_act("ANSWER_ACTION", mes, n, abs_action_id=oid, response=n % 2))
        elif roll < 0.7 or not owners:
            w.add(_act("CREATE_RECORD", erp, n, record_id=f"SN-{len(owners)}",
                       record_type="pallet",
                       properties=[{"name": "weight", "data_type": "INT", "value": n}]))
            owners.append(erp)
        elif roll < 0.97:
            rec = rng.randrange(len(owners))
            w.add(_act("UPDATE_PROPERTIES", owners[rec], n, record_id=f"SN-{rec}",
                       properties=[{"name": "weight", "data_type": "INT", "value": n}]))
        else:  # a forgery: published by the MES, claiming to be the ERP
            w.add(_act("ANSWER_ACTION", erp, n, abs_action_id=f"{n:032x}", response=1),
                  publisher=ADDRESS_OF(mes))
    return w.items


def requests_only(count: int, receivers: int = 20) -> tuple[list[Item], list[str]]:
    """`count` open orders from 20 ERPs to 20 MESes (partners pairwise)."""
    w = Workload(2 * receivers)
    pairs = w.setup()
    n = 0
    while n < count:
        erp, mes = pairs[n % len(pairs)]
        w.add(_act("CREATE_ACTION", erp, n, abs_action_id=f"{n:032x}", receiving_agent=mes,
                   type="production_order", description="bench", metadata={"Qty": n % 100},
                   files=[]))
        n += 1
    return w.items, [mes for _, mes in pairs]


def replay(engine: Any, items: list[Item]) -> dict[str, Any]:
    projection = Projection(engine, "supplychain", ADDRESS_OF)
    projection.create()
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(items), PAGE):
        projection.apply(items[start:start + PAGE])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = projection.counts()
    return {"items": len(items), "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "actions_per_s": round(len(items) / seconds, 1),
            "actions_per_cpu_s": round(len(items) / cpu, 1), **counts}


def list_latency(engine: Any, receivers: list[str], per_receiver: int) -> dict[str, Any]:
    rng = random.Random(11)
    out = {}
    deep = max(0, min(4000, per_receiver - 100))
    for label, start, limit in (("first_page_10", 0, 10), ("page_100", 0, 100),
                                (f"deep_page_start_{deep}", deep, 10)):
        samples = []
        for _ in range(300):
            erp = Erp(engine, None, address="bench", public_key=rng.choice(receivers),
                      address_of=ADDRESS_OF)
            t0 = time.perf_counter()
            got = erp.list_actions(start, limit)
            samples.append(time.perf_counter() - t0)
            if len(got) != limit:
                raise RuntimeError(f"{label}: {len(got)} results, expected {limit}")
        out[label] = latency_summary(samples)
    return out


def _ratios(result: dict[str, Any], verify: float) -> dict[str, Any]:
    """Rates as ratios to the verify rate (per CPU second, so wall-clock ratios drop when
    the machine is shared; the CPU ratio does not)."""
    return {**result, "ratio_to_verify": round(result["actions_per_s"] / verify, 4),
            "cpu_ratio_to_verify": round(result["actions_per_cpu_s"] / verify, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "mariadb"), default="sqlite")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    verify_before = measure_verify()
    mixed_items = mixed(args.items)
    order_items, receivers = requests_only(args.requests)
    with tempfile.TemporaryDirectory() as directory:
        with temporary_database(args.db, Path(directory)) as engine:
            mixed_result = replay(engine, mixed_items)
        with temporary_database(args.db, Path(directory)) as engine:
            orders_result = replay(engine, order_items)
            latency = list_latency(engine, receivers, args.requests // len(receivers))
    verify_after = measure_verify()
    verify = max(verify_before["reference_per_s"], verify_after["reference_per_s"])
    result = {
        "benchmark": "erp", "db": args.db, "page": PAGE, "machine": machine_info(),
        "verify": {"before": verify_before, "after": verify_after, "reference_per_s": verify},
        "replay_mixed": _ratios(mixed_result, verify),
        "replay_orders": _ratios(orders_result, verify),
        "list_latency_at_requests": args.requests,
        "list_latency": latency,
    }
    print(f"verify rate (reference): {verify:,.0f}/s per core")
    for name in ("replay_mixed", "replay_orders"):
        r = result[name]
        print(f"{name}: {r['items']:,} items in {r['seconds']} s = {r['actions_per_s']:,.0f} "
              f"actions/s ({r['ratio_to_verify']:.3f} x verify), "
              f"{r['actions_per_cpu_s']:,.0f} per CPU s ({r['cpu_ratio_to_verify']:.3f} x "
              f"verify); applied {r['applied']:,}, rejected {r['rejected']:,}")
    for label, summary in latency.items():
        print(f"list_actions {label} with {args.requests:,} requests: p50 "
              f"{summary['p50_ms']} ms, p99 {summary['p99_ms']} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
