"""Plug-in map and run-time loading, and the dispatcher's handling of failing plug-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from mes.collector.dispatch import Dispatcher, Outcome
from mes.collector.plugins import CncData, PluginError, load_class, load_map, load_plugins
from mes.collector.store import CncStore

NOW = 1_747_379_100


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def message(cnc_id: str = "CNC001", ts: int = 1747379028, **payload) -> bytes:
    return json.dumps({"cnc_id": cnc_id, "part_program": "p1", "timestamp": ts,
                       "payload": payload or {"status": "running"}}).encode()


@pytest.fixture
def store() -> CncStore:
    s = CncStore(create_engine("sqlite://"))
    s.create_tables()
    return s


def test_collect_map_reads_pairs(tmp_path: Path) -> None:
    path = write(tmp_path / "map.json", json.dumps([
        {"cnc_id": "CNC001", "class_name": "CNCTypeA"}, {"cnc_id": "CNC002"}]))
    assert load_map(path) == {"CNC001": "CNCTypeA", "CNC002": "CncData"}


@pytest.mark.parametrize("text, reason", [
    ("{}", "list"), ("[1]", "not an object"), ('[{"class_name": "A"}]', "cnc_id"),
    ('[{"cnc_id": "A", "class_name": "../evil"}]', "identifier"),
    ('[{"cnc_id": "A"}, {"cnc_id": "A"}]', "twice"), ("nope", "not JSON"),
])
def test_collect_map_refuses_malformed(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(PluginError, match=reason):
        load_map(write(tmp_path / "map.json", text))


def test_collect_map_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="cannot read"):
        load_map(tmp_path / "absent.json")


def test_collect_plugin_loads_class_from_module(tmp_path: Path) -> None:
    write(tmp_path / "CNCTypeA.py", "class CNCTypeA:\n"
          "    def __init__(self, cnc_id):\n        self.cnc_id = cnc_id\n"
          "    def handle(self, message, db):\n        return db.store(message)\n")
    cls = load_class(tmp_path, "CNCTypeA")
    assert cls.__name__ == "CNCTypeA"


def test_collect_plugin_default_needs_no_directory() -> None:
    assert load_class(None, "CncData") is CncData


def test_collect_plugin_missing_module(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        load_class(tmp_path, "CNCTypeZ")


def test_collect_plugin_class_without_handle(tmp_path: Path) -> None:
    write(tmp_path / "NoHandle.py", "class NoHandle:\n    pass\n")
    with pytest.raises(PluginError, match="no handle"):
        load_class(tmp_path, "NoHandle")


def test_collect_plugin_module_without_class(tmp_path: Path) -> None:
    write(tmp_path / "Other.py", "class Something:\n    def handle(self, m, db): pass\n")
    with pytest.raises(PluginError, match="no class Other"):
        load_class(tmp_path, "Other")


def test_collect_plugin_module_that_fails_to_import(tmp_path: Path) -> None:
    write(tmp_path / "Broken.py", "raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="failed to import"):
        load_class(tmp_path, "Broken")


def test_collect_one_instance_per_cnc_id(tmp_path: Path) -> None:
    write(tmp_path / "CNCTypeA.py", "class CNCTypeA:\n"
          "    def __init__(self, cnc_id):\n        self.cnc_id = cnc_id\n"
          "    def handle(self, message, db):\n        return True\n")
    plugins = load_plugins({"CNC001": "CNCTypeA", "CNC002": "CNCTypeA"}, tmp_path)
    a, b = plugins.instances["CNC001"], plugins.instances["CNC002"]
    assert a is not b and (a.cnc_id, b.cnc_id) == ("CNC001", "CNC002")


def test_collect_unloadable_plugin_rejects_only_its_machine(tmp_path: Path, store) -> None:
    plugins = load_plugins({"CNC001": "CncData", "CNC002": "Missing"}, tmp_path)
    assert "CNC002" in plugins.errors
    dispatcher = Dispatcher(plugins, store, clock=lambda: NOW)
    assert dispatcher.process(message("CNC002")) == Outcome.REJECTED
    assert dispatcher.process(message("CNC001")) == Outcome.STORED
    assert len(store.rows()) == 1


def test_collect_raising_plugin_never_stops_collector(tmp_path: Path, store) -> None:
    write(tmp_path / "Raises.py", "class Raises:\n"
          "    def handle(self, message, db):\n        raise ValueError('driver bug')\n")
    plugins = load_plugins({"CNC001": "CncData", "CNC002": "Raises"}, tmp_path)
    dispatcher = Dispatcher(plugins, store, clock=lambda: NOW)
    assert dispatcher.process(message("CNC002")) == Outcome.PLUGIN_ERROR
    assert dispatcher.process(message("CNC001")) == Outcome.STORED
    assert dispatcher.stats.as_dict()["plugin_errors"] == 1
    assert [r["cnc_id"] for r in store.rows()] == ["CNC001"]


def test_collect_rejections_are_counted_by_rule(store) -> None:
    dispatcher = Dispatcher(load_plugins({"CNC001": "CncData"}, None), store, clock=lambda: NOW)
    assert dispatcher.process(b"\xff") == Outcome.REJECTED
    assert dispatcher.process(message("CNC404")) == Outcome.REJECTED
    assert dispatcher.process(message(ts=NOW + 3600)) == Outcome.REJECTED
    stats = dispatcher.stats.as_dict()
    assert stats["rejected"] == 3 and stats["rejected_by_rule"] == {"1": 1, "4": 1, "6": 1}
    assert store.rows() == []


def test_collect_topic_must_match_cnc_id(store) -> None:
    dispatcher = Dispatcher(load_plugins({"CNC001": "CncData", "CNC002": "CncData"}, None),
                            store, clock=lambda: NOW)
    assert dispatcher.process(message("CNC001"), "sensor/CNC/CNC002") == Outcome.REJECTED
    assert dispatcher.process(message("CNC001"), "sensor/CNC/CNC001") == Outcome.STORED
    assert dispatcher.process(message("CNC002", ts=1747379029), "sensor/CNC") == Outcome.STORED


def test_collect_rejection_log_is_bounded(store, caplog) -> None:
    now = [float(NOW)]
    dispatcher = Dispatcher(load_plugins({"CNC001": "CncData"}, None), store,
                            clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="mes.collector.dispatch"):
        for _ in range(100):
            dispatcher.process(b"\xff garbage")
        assert len(caplog.records) == 20
        assert "rule 1" in caplog.records[0].getMessage()
        now[0] += 61
        dispatcher.process(message("CNC404"))
    summary = caplog.records[20].getMessage()
    assert "80 more rejected messages" in summary and "'1': 80" in summary
    assert "CNC404" in caplog.records[21].getMessage()
    assert dispatcher.stats.as_dict()["rejected"] == 101
