"""The node's wallet: its private keys, kept in a 0600 file in the chain directory."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ledger.addresses import AddressCodec
from ledger.errors import StoreError
from ledger.keys import KeyPair

log = logging.getLogger(__name__)

WALLET_FILE = "wallet.keys"


class WalletDamaged(StoreError):
    """The wallet file exists but cannot be read as a wallet."""


class Wallet:
    """Keys by public key hash; the first key is the node's default (handshake) address."""

    def __init__(self, path: Path, codec: AddressCodec) -> None:
        self.path = path
        self.codec = codec
        self._keys: dict[bytes, KeyPair] = {}
        self._order: list[bytes] = []
        self._watch: list[bytes] = []
        """Watch-only addresses (importaddress): their transactions are listed, never signed."""
        if path.exists():
            _check_mode(path)
            text = path.read_text(errors="replace")
            if text.strip():  # an empty file is an empty wallet (the caller decides)
                try:
                    stored = json.loads(text)
                    for secret_hex in stored["keys"]:
                        self._add(KeyPair(bytes.fromhex(secret_hex)))
                    self._watch = [bytes.fromhex(h) for h in stored.get("watch", [])
                                   if bytes.fromhex(h) not in self._keys]
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise WalletDamaged(
                        f"the wallet file {path.name} is damaged ({e}); restore it from a "
                        "backup, or start with --new-wallet to move it aside and make a new "
                        "address") from None

    def _add(self, key: KeyPair) -> None:
        if key.pubkey_hash not in self._keys:
            self._keys[key.pubkey_hash] = key
            self._order.append(key.pubkey_hash)

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [self._keys[h].secret.hex() for h in self._order],
                       "watch": [h.hex() for h in self._watch]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def new_key(self) -> KeyPair:
        key = KeyPair.generate()
        self._add(key)
        self._save()
        return key

    def import_key(self, secret: bytes) -> KeyPair:
        key = KeyPair(secret)
        self._add(key)
        if key.pubkey_hash in self._watch:
            self._watch.remove(key.pubkey_hash)
        self._save()
        return key

    def add_watch_only(self, pubkey_hash: bytes) -> None:
        """Watch an address without its key; nothing happens if the wallet has its key."""
        if pubkey_hash not in self._keys and pubkey_hash not in self._watch:
            self._watch.append(pubkey_hash)
            self._save()

    def watch_only(self) -> list[bytes]:
        return list(self._watch)

    @property
    def default(self) -> KeyPair:
        return self._keys[self._order[0]]

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, pubkey_hash: bytes) -> bool:
        return pubkey_hash in self._keys

    def get(self, pubkey_hash: bytes) -> KeyPair | None:
        return self._keys.get(pubkey_hash)

    def keys(self) -> list[KeyPair]:
        return [self._keys[h] for h in self._order]

    def hashes(self) -> list[bytes]:
        return list(self._order)


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("wallet file %s was readable by others (mode %o); fixing to 0600",
                    path.name, mode)
        path.chmod(0o600)
