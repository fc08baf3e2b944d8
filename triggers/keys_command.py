"""`chainmill keys generate CHAIN`: an RSA-2048 key pair for private messages, published.

Writes `private_key.pem` (mode 0600) and `public_key.pub` into the chain's key directory,
makes sure the `pubkeys` and `access` streams exist and are subscribed, and publishes the
public key on `pubkeys` under this node's address, from that address (spec 1.9.2 step 1).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from config.paths import resolve_datadir
from triggers import crypto
from triggers.errors import ConfigurationInvalid
from triggers.nodes import ACCESS, PUBKEYS, NodeClient, client_for, rpc_error_code, rpc_errors

__all__ = ["add_parser", "run", "ensure_system_streams", "publish_public_key"]

log = logging.getLogger(__name__)
_DUPLICATE_NAME = -705


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `keys generate`."""
    top = subparsers.add_parser("keys", help="RSA key pairs for private trigger messages")
    sub = top.add_subparsers(dest="keys_command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("generate", help="make a key pair and publish the public key")
    p.add_argument("chain")
    p.add_argument("--datadir", help="node data directory (default ~/.chainmill)")
    p.add_argument("--dir", help="key directory (default DATADIR/CHAIN/triggers-keys)")
    p.add_argument("--bits", type=int, default=crypto.MIN_RSA_BITS)
    p.add_argument("--address", help="publish from this address (default: the node's first)")
    p.add_argument("--no-publish", action="store_true", help="only write the files")


def _exists(client: NodeClient, stream: str) -> bool:
    try:
        return bool(client.call("liststreams", stream))
    except rpc_errors() as exc:
        if rpc_error_code(exc) is None:
            raise
        return False


def ensure_system_streams(client: NodeClient, wait: float = 30.0) -> None:
    """Create `pubkeys` and `access` when missing (open streams), and subscribe to both.

    Only a missing stream is created: a partner's node usually lacks create permission, and
    the node checks that before it would report the name as taken.
    """
    for stream in (PUBKEYS, ACCESS):
        if not _exists(client, stream):
            try:
                client.call("create", "stream", stream, True)
                log.info("created stream %s", stream)
            except rpc_errors() as exc:
                if rpc_error_code(exc) is None:
                    raise
                # Refused (a partner's node may not create streams) or already taken: the
                # admin's node may have created it a moment ago and it is still on its way.
                if not _wait_for(client, stream, wait):
                    raise ConfigurationInvalid(
                        f"stream {stream} does not exist on this node and it may not create "
                        f"it ({exc}): run `chainmill keys generate` on the chain admin's node "
                        "first") from None
        client.call("subscribe", stream)


def _wait_for(client: NodeClient, stream: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if _exists(client, stream):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def publish_public_key(client: NodeClient, address: str, public_pem: str) -> str:
    """Publish `public_pem` on `pubkeys`, key = address, from that address; returns the txid."""
    return str(client.call("publishfrom", address, PUBKEYS, address, public_pem.encode().hex()))


def run(args: argparse.Namespace) -> int:
    """Generate, write and publish."""
    datadir = resolve_datadir(args.datadir)
    directory = Path(args.dir) if args.dir else datadir / args.chain / "triggers-keys"
    pair = crypto.write_keypair(directory, crypto.generate_keypair(args.bits))
    print(f"private key: {pair.private_path}")
    print(f"public key: {pair.public_path}")
    if args.no_publish:
        return 0
    client = client_for(args.chain, args.datadir)
    ensure_system_streams(client)
    address = args.address or client.call("getaddresses")[0]
    txid = publish_public_key(client, address, pair.public_pem)
    print(f"published on {PUBKEYS} for {address}: {txid}")
    return 0
