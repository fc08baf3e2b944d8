"""MES adapter: production units, day reports, CNC data collection.

`update_production_unit(status, process_name, unit_id)` is the reference MES's call after it
saved a unit (spec 3.2); it is imported lazily so `import mes` stays cheap for the collector.
"""

from __future__ import annotations

__all__ = ["update_production_unit"]


def update_production_unit(status: str | None, process_name: str | None, unit_id: int) -> int:
    """Queue the committed change of ``unit_id`` for the chain (see mes.units)."""
    from mes import units

    return units.update_production_unit(status, process_name, unit_id)
