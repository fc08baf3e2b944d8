"""The node's JSON-RPC methods, one module per area; `register_all` fills a MethodTable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.rpc import help as rpc_help
from node.rpc.dispatch import MethodTable


def register(table: MethodTable, name: str, fn: Callable[[list[Any]], Any],
             warmup_ok: bool = False) -> None:
    """Register a handler with the parameter counts and help text of the spec's method list."""
    lo, hi = rpc_help.PARAM_COUNTS[name]
    table.register(name, fn, min_params=lo, max_params=hi, help=rpc_help.HELP[name],
                   category=rpc_help.CATEGORY[name], warmup_ok=warmup_ok)


def register_all(table: MethodTable, ctx: Any) -> None:
    from node.rpc.methods import (
        blocks,
        control,
        network,
        permissions,
        streams,
        wallet,
        wallettxs,
    )

    for module in (control, blocks, wallet, wallettxs, permissions, streams, network):
        module.register_methods(table, ctx)
