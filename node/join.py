"""Joining a chain through a seed node: fetch its parameters, ask whether our address may
connect, and remember the seed for later starts."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from config import paths
from config.errors import ConfigError
from config.params import ChainParams, params_hash, read_params_file
from config.runtime import ensure_chain_conf, read_conf_file, write_conf_file
from node.p2p.framing import FrameError, encode_frame, read_frame
from node.p2p.messages import Msg, decode_params
from node.p2p.network import BOOTSTRAP_MAGIC

log = logging.getLogger(__name__)


async def _ask(host: str, port: int, address_hash: bytes, timeout: float) -> tuple[str, bool]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(encode_frame(BOOTSTRAP_MAGIC, Msg.GETPARAMS, address_hash))
        await writer.drain()
        msg_type, payload = await asyncio.wait_for(
            read_frame(reader, BOOTSTRAP_MAGIC, 1 << 20), timeout)
    finally:
        writer.close()
    if msg_type != Msg.PARAMS:
        raise FrameError("the seed did not answer with parameters")
    return decode_params(payload)


def ask_seed(host: str, port: int, address_hash: bytes = b"", timeout: float = 10.0
             ) -> tuple[str, bool]:
    """(params.dat text, whether `address_hash` may connect) from a seed node."""
    try:
        return asyncio.run(_ask(host, port, address_hash, timeout))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, FrameError) as e:
        raise ConfigError(f"cannot reach the seed node {host}:{port}: {e}") from None


def install_params(chain: str, chain_dir: Path, text: str) -> ChainParams:
    """Check the seed's parameters and write them as this node's params.dat."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / paths.PARAMS_FILE
        p.write_text(text)
        params = read_params_file(p)
    if params["chain-name"] != chain:
        raise ConfigError(f"the seed serves chain {params['chain-name']}, not {chain}")
    if not params.locked or params_hash(params) != params["chain-params-hash"]:
        raise ConfigError("the seed's chain parameters are not a locked, consistent set")
    chain_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.write_private_file(chain_dir / paths.PARAMS_FILE, text)
    ensure_chain_conf(chain_dir)
    return params


def remember_seed(chain_dir: Path, host: str, port: int, ports: dict[str, int]) -> None:
    """Keep the seed (and the ports this node was told to use) in chainmill.conf, so later
    starts need only `chainmill start CHAIN`, and `chainmill cli` finds the RPC port."""
    conf = chain_dir / paths.CONF_FILE
    values = read_conf_file(conf) if conf.exists() else {}
    before = {name: list(v) for name, v in values.items()}
    for name, value in ports.items():
        values[name] = [str(value)]
    seeds = values.setdefault("addnode", [])
    if f"{host}:{port}" not in seeds:
        seeds.append(f"{host}:{port}")
    # Also when only the ports changed (a second join start on other ports, e.g. after the
    # first one found a port taken): later starts and `chainmill cli` read them from here.
    if values != before:
        write_conf_file(conf, values)
