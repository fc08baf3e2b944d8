"""Console admin users: names with scrypt password hashes in the chain's console-users file (0600)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from pathlib import Path

from config.errors import ConfigError
from config.paths import chain_dir, write_private_file

USERS_FILE = "console-users.json"
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# scrypt cost: n=2**14, r=8, p=1 is the interactive-login setting of the scrypt paper
# (about 16 MiB and tens of milliseconds per check).
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def users_path(datadir: Path, chain: str) -> Path:
    """Where the console users of ``chain`` are kept."""
    return chain_dir(datadir, chain) / USERS_FILE


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) for ``password``."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by hash_password (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode()[:MAX_PASSWORD * 4], salt=base64.b64decode(salt),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_users(path: Path) -> dict[str, str]:
    """name -> stored hash; empty when the file does not exist."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read console users from {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is not a console users file")
    return data


def add_user(path: Path, name: str, password: str) -> None:
    """Add or replace user ``name``; ConfigError for a bad name or a short password."""
    if not _NAME.fullmatch(name):
        raise ConfigError("a console user name is 1-64 letters, digits or ._@-")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ConfigError(f"a console password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    users = load_users(path)
    users[name] = hash_password(password)
    write_private_file(path, json.dumps(users, indent=1, sort_keys=True) + "\n")
