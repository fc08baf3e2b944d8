"""Per-machine plug-ins (spec 3.4): the map file, run-time loading, one instance per cnc_id.

The map file is a JSON list of `{"cnc_id": ..., "class_name": ...}`. A class named `X` is
loaded from the module file `X.py` in the plug-ins directory (names are checked to be plain
identifiers, so a map entry cannot point outside the directory). The class name `CncData`
(or an entry without `class_name`) means the built-in default plug-in. A plug-in is any class
with a `handle(message, db)` method; the collector calls it with a validated `CncMessage`
and the `CncStore`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from config.errors import ChainmillError
from mes.collector.message import MAX_ID_CHARS, CncMessage
from mes.collector.store import CncStore

__all__ = [
    "DEFAULT_CLASS",
    "PluginError",
    "Plugin",
    "CncData",
    "load_map",
    "load_class",
    "PluginSet",
    "load_plugins",
]

log = logging.getLogger(__name__)

DEFAULT_CLASS = "CncData"
_MODULE_PREFIX = "chainmill_cnc_plugin_"
_MAX_MAP_BYTES = 1 << 20


class PluginError(ChainmillError):
    """A plug-in map entry or plug-in class that cannot be used."""


class Plugin(Protocol):
    """What every plug-in implements."""

    def handle(self, message: CncMessage, db: CncStore) -> Any: ...


class CncData:
    """The default plug-in: one row in `cnc_data` per message."""

    def __init__(self, cnc_id: str) -> None:
        self.cnc_id = cnc_id

    def handle(self, message: CncMessage, db: CncStore) -> bool:
        """Store the message; False for a redelivery already stored."""
        return db.store(message)


def load_map(path: Path) -> dict[str, str]:
    """cnc_id -> class name from the JSON map file; PluginError on any malformed entry."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PluginError(f"cannot read plug-in map {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_MAP_BYTES:
        raise PluginError(f"plug-in map {path} is larger than 1 MiB")
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise PluginError(f"plug-in map {path} is not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise PluginError(f"plug-in map {path} must be a JSON list of objects")
    mapping: dict[str, str] = {}
    for position, entry in enumerate(entries):
        where = f"{path} entry {position}"
        if not isinstance(entry, dict):
            raise PluginError(f"{where} is not an object")
        cnc_id = entry.get("cnc_id")
        class_name = entry.get("class_name", DEFAULT_CLASS)
        if not isinstance(cnc_id, str) or not 0 < len(cnc_id) <= MAX_ID_CHARS:
            raise PluginError(f"{where}: cnc_id must be a string of 1 to {MAX_ID_CHARS} characters")
        if not isinstance(class_name, str) or not class_name.isidentifier():
            raise PluginError(f"{where}: class_name must be a Python identifier")
        if cnc_id in mapping:
            raise PluginError(f"{where}: cnc_id {cnc_id!r} is listed twice")
        mapping[cnc_id] = class_name
    return mapping


def load_class(directory: Path | None, class_name: str) -> type:
    """The class `class_name` from `directory/class_name.py` (or the built-in default)."""
    if class_name == DEFAULT_CLASS:
        return CncData
    if not class_name.isidentifier():
        raise PluginError(f"plug-in name {class_name!r} is not a Python identifier")
    if directory is None:
        raise PluginError(f"plug-in {class_name} needs a plug-ins directory (--plugins)")
    path = Path(directory) / f"{class_name}.py"
    if not path.is_file():
        raise PluginError(f"plug-in module {path} does not exist")
    module_name = _MODULE_PREFIX + class_name
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plug-in module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # plug-in code is foreign: any failure is a load error
        sys.modules.pop(module_name, None)
        raise PluginError(f"plug-in module {path} failed to import: {exc!r}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise PluginError(f"plug-in module {path} defines no class {class_name}")
    if not callable(getattr(cls, "handle", None)):
        raise PluginError(f"plug-in class {class_name} has no handle(message, db) method")
    return cls


def _instantiate(cls: type, cnc_id: str) -> Any:
    try:
        return cls(cnc_id)
    except TypeError:
        return cls()  # a plug-in whose constructor takes no machine id


@dataclass
class PluginSet:
    """The plug-in instance of every mapped cnc_id, and the load error of those that failed."""

    instances: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def known(self) -> set[str]:
        """Every mapped cnc_id (rule 4), whether its plug-in loaded or not."""
        return set(self.instances) | set(self.errors)


def load_plugins(mapping: dict[str, str], directory: Path | None) -> PluginSet:
    """One instance per cnc_id. A plug-in that cannot load is recorded, not fatal: the other
    machines keep being collected, and messages for that one are rejected with the reason."""
    result = PluginSet()
    classes: dict[str, type | PluginError] = {}
    for cnc_id, class_name in mapping.items():
        if class_name not in classes:
            try:
                classes[class_name] = load_class(directory, class_name)
            except PluginError as exc:
                log.error("%s", exc)
                classes[class_name] = exc
        loaded = classes[class_name]
        if isinstance(loaded, PluginError):
            result.errors[cnc_id] = str(loaded)
            continue
        try:
            result.instances[cnc_id] = _instantiate(loaded, cnc_id)
        except Exception as exc:  # foreign constructor
            log.error("plug-in %s for %s failed to start: %r", class_name, cnc_id, exc)
            result.errors[cnc_id] = f"plug-in {class_name} failed to start: {exc!r}"
    return result
