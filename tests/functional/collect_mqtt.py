"""Emulator -> real Mosquitto -> collector -> database, as `chainmill collect` processes.

1. The broker is stopped and restarted while machines publish: every message the broker
   acknowledged to the emulator ends up in `cnc_data` exactly once (the broker keeps the
   collector's persistent session across its restart; QoS 1 redeliveries hit the unique
   index).
2. 500 hostile messages (binary garbage, 10 MB bodies, deeply nested JSON, wrong shapes) are
   rejected and counted while the emulator's valid traffic keeps being stored.
"""

from __future__ import annotations

import json
import os
import random

import paho.mqtt.client as mqtt
import pytest
from collect_support import Broker, Process, log, read_stats, recorded, start_collector
from framework import wait_until
from sqlalchemy import create_engine, func, select

from mes.collector.store import cnc_data

pytestmark = pytest.mark.functional

CNCS = ["CNC001", "CNC002", "CNC003"]


def key(m: dict) -> tuple:
    return (m["cnc_id"], int(m["timestamp"]), m["part_program"],
            json.dumps(m["payload"], sort_keys=True))


def stored(db_url: str) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(cnc_data)).all()
    finally:
        engine.dispose()
    return [(r.cnc_id, r.timestamp, r.part_program,
             json.dumps(json.loads(r.json_data), sort_keys=True)) for r in rows]


def emulate(directory, broker: Broker, count: int, rate: float, seed: int) -> Process:
    return Process(directory, f"emulator-{seed}", [
        "collect", "emulate", "--broker", broker.address, "--cnc", ",".join(CNCS),
        "--count", str(count), "--rate", str(rate), "--step", "1", "--backfill", "3600",
        "--seed", str(seed), "--record", str(directory / f"acked-{seed}.jsonl")])


def test_collect_survives_broker_restart(harness) -> None:
    d = harness.base_dir
    broker = Broker(d / "broker", harness.port_factory())
    broker.start()
    db_url = f"sqlite:///{d / 'mes.db'}"
    collector, stats = start_collector(d, broker, db_url, CNCS)
    try:
        log.info("machines publish 300 messages; the broker restarts after about 100")
        emulator = emulate(d, broker, 300, 60, harness.seed)
        acked_file = d / f"acked-{harness.seed}.jsonl"
        wait_until(lambda: len(recorded(acked_file)) >= 100, msg="100 acknowledged messages")
        broker.stop()
        log.info("broker down after %d acks", len(recorded(acked_file)))
        wait_until(lambda: not read_stats(stats).get("connected"),
                   msg="the collector noticed the broker is gone")
        broker.start()
        assert emulator.wait(120) == 0, emulator.text()
        acked = recorded(acked_file)
        assert len(acked) == 300
        expected = sorted(key(m) for m in acked)
        wait_until(lambda: len(stored(db_url)) >= len(expected), timeout=60,
                   msg="every acknowledged message stored")
        rows = sorted(stored(db_url))
        assert rows == expected, "lost or extra rows"
        assert len(set(rows)) == len(rows)
        s = read_stats(stats)
        assert s["connections"] >= 2 and s["rejected"] == 0
    finally:
        assert collector.stop() == 0, collector.text()
        broker.stop()
    log.info("collector stats at the end: %s", read_stats(stats))


def hostile_messages(rng: random.Random) -> list[bytes]:
    bodies: list[bytes] = []
    bodies += [rng.randbytes(rng.randint(1, 2000)) for _ in range(300)]
    bodies += [b"\xff" + os.urandom(10 * 1024 * 1024)] * 2
    bodies += [b'{"cnc_id":"CNC001","payload":' + b"[" * 200_000 + b"]" * 200_000 + b"}"] * 3
    base = {"cnc_id": "CNC001", "part_program": "p", "timestamp": "1747379028",
            "payload": {"status": "running"}}
    variants = [
        {**base, "cnc_id": "CNC999"}, {**base, "cnc_id": "X" * 46}, {**base, "timestamp": "soon"},
        {**base, "timestamp": 99999999999}, {**base, "payload": "running"},
        {k: v for k, v in base.items() if k != "payload"}, {**base, "part_program": 1},
        [base], {**base, "timestamp": -1},
    ]
    while len(bodies) < 500:
        bodies.append(json.dumps(rng.choice(variants)).encode())
    rng.shuffle(bodies)
    return bodies


def test_collect_rejects_hostile_traffic_while_storing_valid(harness) -> None:
    d = harness.base_dir
    broker = Broker(d / "broker", harness.port_factory())
    broker.start()
    db_url = f"sqlite:///{d / 'mes.db'}"
    collector, stats = start_collector(d, broker, db_url, CNCS)
    attacker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
    try:
        emulator = emulate(d, broker, 150, 50, harness.seed)
        log.info("500 hostile messages on both topics while the machines publish")
        attacker.connect("127.0.0.1", broker.port)
        attacker.loop_start()
        rng = random.Random(harness.seed)
        infos = []
        for n, body in enumerate(hostile_messages(rng)):
            topic = "sensor/CNC" if n % 2 else "sensor/CNC/CNC001"
            infos.append(attacker.publish(topic, body, qos=1))
        for info in infos:
            info.wait_for_publish(timeout=120)
        assert emulator.wait(120) == 0, emulator.text()
        acked = recorded(d / f"acked-{harness.seed}.jsonl")
        assert len(acked) == 150
        wait_until(lambda: read_stats(stats).get("received", 0) >= 650, timeout=120,
                   msg="the collector received every message")
        s = read_stats(stats)
        assert s["rejected"] == 500 and s["stored"] == 150, s
        wait_until(lambda: len(stored(db_url)) >= 150, msg="the last batch committed")
        assert sorted(stored(db_url)) == sorted(key(m) for m in acked)
        with create_engine(db_url).connect() as conn:
            assert conn.execute(select(func.count()).select_from(cnc_data)).scalar() == 150
        assert "rejected message" in collector.text()
    finally:
        attacker.loop_stop()
        attacker.disconnect()
        assert collector.stop() == 0, collector.text()
        broker.stop()


def test_collect_plugins_from_directory_and_a_raising_one(harness) -> None:
    """CNC002's plug-in raises on every message; CNC001's custom plug-in (loaded from the
    plug-ins directory at run time) stores through the store it is given; the collector keeps
    collecting both."""
    d = harness.base_dir
    (d / "Broken.py").write_text(
        "class Broken:\n    def handle(self, message, db):\n"
        "        raise RuntimeError('driver bug')\n")
    (d / "Spindle.py").write_text(
        "from mes.collector.plugins import CncData\n\n"
        "class Spindle(CncData):\n    def handle(self, message, db):\n"
        "        if message.payload.get('status') != 'running':\n            return None\n"
        "        return db.store(message)\n")
    broker = Broker(d / "broker", harness.port_factory())
    broker.start()
    db_url = f"sqlite:///{d / 'mes.db'}"
    map_path = d / "cnc_classes.json"
    stats = d / "stats.json"
    map_path.write_text(json.dumps([{"cnc_id": "CNC001", "class_name": "Spindle"},
                                    {"cnc_id": "CNC002", "class_name": "Broken"},
                                    {"cnc_id": "CNC003", "class_name": "CncData"}]))
    collector = Process(d, "collector", [
        "collect", "--broker", broker.address, "--db", db_url, "--map", str(map_path),
        "--plugins", str(d), "--stats", str(stats), "--client-id", "plugin-collector"])
    try:
        wait_until(lambda: read_stats(stats).get("connected"), msg="the collector connected")
        emulator = emulate(d, broker, 90, 0, harness.seed)
        assert emulator.wait(60) == 0, emulator.text()
        acked = recorded(d / f"acked-{harness.seed}.jsonl")
        wait_until(lambda: read_stats(stats).get("received") == 90, msg="90 messages received")
        wanted = sorted(key(m) for m in acked if m["cnc_id"] == "CNC003" or (
            m["cnc_id"] == "CNC001" and m["payload"]["status"] == "running"))
        wait_until(lambda: len(stored(db_url)) >= len(wanted), msg="the stored rows")
        assert sorted(stored(db_url)) == wanted
        wait_until(lambda: read_stats(stats).get("plugin_errors") == 30,
                   msg="30 plug-in errors counted (CNC002's every message)")
        assert collector.process.poll() is None, "the collector is still running"
        assert "driver bug" in collector.text()
    finally:
        assert collector.stop() == 0, collector.text()
        broker.stop()
