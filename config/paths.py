"""Where chainmill keeps its files: the data directory, chain directories and their file names."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from config.errors import ConfigError

DATADIR_ENV = "CHAINMILL_DATADIR"
"""Environment variable that moves the data directory (below ``--datadir``, above the default)."""

DEFAULT_DATADIR_NAME = ".chainmill"
"""Name of the data directory inside the user's home directory."""

PARAMS_FILE = "params.dat"
"""Chain parameters, written by ``chainmill create`` (see config.params)."""

CONF_FILE = "chainmill.conf"
"""Runtime config: ``<datadir>/chainmill.conf`` (global) and ``<datadir>/<chain>/chainmill.conf``."""

LOCK_FILE = ".lock"
"""Start-up lock in each chain directory, held (``flock``) by the running node (node.lockfile)."""

PID_FILE = "chainmill.pid"
"""The running node's process id, for information (the lock file decides who runs)."""

CLI_HISTORY_DIR = ".cli_history"
"""Directory under the data directory holding one interactive-CLI history file per chain."""

_CHAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def resolve_datadir(cli_value: str | os.PathLike[str] | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The data directory: the command-line value, else ``CHAINMILL_DATADIR``, else ``~/.chainmill``.

    An empty value counts as not given. ``~`` is expanded; the directory need not exist.
    """
    if cli_value is not None and str(cli_value) != "":
        return Path(cli_value).expanduser()
    from_env = environ.get(DATADIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / DEFAULT_DATADIR_NAME


def validate_chain_name(name: str) -> str:
    """Return ``name`` if it is a valid chain name, else raise ConfigError.

    Valid: 1 to 64 characters among letters, digits, ``-``, ``_`` and ``.``, and not made of
    dots only (``.`` and ``..`` would name the data directory or its parent).
    """
    if not isinstance(name, str) or not _CHAIN_NAME.fullmatch(name) or set(name) == {"."}:
        raise ConfigError(
            f"invalid chain name {name!r}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )
    return name


def chain_dir(datadir: str | os.PathLike[str], chain: str) -> Path:
    """The directory of ``chain`` inside ``datadir`` (the chain name is validated first)."""
    return Path(datadir) / validate_chain_name(chain)


def params_path(datadir: str | os.PathLike[str], chain: str) -> Path:
    """``<datadir>/<chain>/params.dat``."""
    return chain_dir(datadir, chain) / PARAMS_FILE


def chain_conf_path(datadir: str | os.PathLike[str], chain: str) -> Path:
    """``<datadir>/<chain>/chainmill.conf``."""
    return chain_dir(datadir, chain) / CONF_FILE


def global_conf_path(datadir: str | os.PathLike[str]) -> Path:
    """``<datadir>/chainmill.conf``, the settings shared by every chain of this data directory."""
    return Path(datadir) / CONF_FILE


def cli_history_path(datadir: str | os.PathLike[str], chain: str) -> Path:
    """``<datadir>/.cli_history/<chain>.log``, the interactive CLI's history for ``chain``."""
    return Path(datadir) / CLI_HISTORY_DIR / f"{validate_chain_name(chain)}.log"


def write_private_file(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically with permissions ``mode`` (default owner-only).

    The text goes to a temporary file in the same directory, which is flushed to disk and then
    renamed over ``path``: a reader sees the old file or the new one, never half of either, and
    the file never exists with wider permissions than ``mode``.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as tmp:
            os.fchmod(tmp.fileno(), mode)
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
