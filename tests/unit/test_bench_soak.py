"""bench/soak.py's pure parts: the load's mix of calls and keys, and the curve's summary."""

from __future__ import annotations

import orjson

from bench.soak import Load, call_body, growth, item, rss_at


def test_load_mixes_publishmulti_and_single_publishes_and_sends_every_item_once() -> None:
    load = Load(items=1000, batch=32, single_every=8, rate=0)
    claims = []
    while (c := load.claim()) is not None:
        claims.append(c)
    starts = [i for s, n, _ in claims for i in range(s, s + n)]
    assert starts == list(range(1000))
    sizes = [n for _, n, _ in claims]
    assert sizes[7] == 1 and sizes[15] == 1 and sizes[0] == 32
    assert orjson.loads(call_body(*claims[7]))["method"] == "publish"
    multi = orjson.loads(call_body(*claims[0]))
    assert multi["method"] == "publishmulti" and len(multi["params"][1]) == 32


def test_items_have_their_own_key_and_some_shared_ones() -> None:
    assert item(7)["key"] == "SN00000007"
    assert item(40)["key"] == ["SN00000040", "lot-040", "station-8"]
    assert item(4000)["key"][1] == item(0)["key"][1] == "lot-000"


def test_growth_is_the_slope_under_load() -> None:
    flat = [{"phase": "load", "items_confirmed": i * 10_000, "rss_mib": 120.0 + (i % 2) * 8}
            for i in range(101)]
    rising = [{**s, "rss_mib": 100.0 + s["items_confirmed"] / 10_000} for s in flat]
    assert abs(growth(flat, 1_000_000)["second_half_mib_per_100k"]) < 1
    assert growth(rising, 1_000_000) == {"first_half_mib_per_100k": 10.0,
                                         "second_half_mib_per_100k": 10.0}
    assert rss_at(rising, 250_000) == 125.0
    assert rss_at(rising, 2_000_000) is None
