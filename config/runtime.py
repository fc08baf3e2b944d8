"""Node runtime configuration: ``chainmill.conf`` files, environment, command line, merged once.

Precedence, highest first: command line, environment (``CHAINMILL_<NAME>``), the chain's
``<datadir>/<chain>/chainmill.conf``, the global ``<datadir>/chainmill.conf``, defaults.
``merge_runtime`` is the one place where these meet; its result, a RuntimeConfig, is passed
down explicitly (spec §6).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import random
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from config.errors import ConfigError
from config.paths import CONF_FILE, global_conf_path, validate_chain_name, write_private_file

if TYPE_CHECKING:
    from config.params import ChainParams

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RPCUSER = "chainmillrpc"
ENV_PREFIX = "CHAINMILL_"

RuntimeKind = Literal["str", "bool", "int", "float", "list", "networks", "methods"]
"""``list``: repeatable (or comma-separated) text; ``networks``: IP, IP/netmask or IP/CIDR
entries stored as ip networks; ``methods``: RPC method names stored lowercase."""


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """One runtime parameter: its name, kind, default and accepted range."""

    name: str
    kind: RuntimeKind
    default: object
    description: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_name(self) -> str:
        """``CHAINMILL_<NAME>``: upper case, ``-`` replaced by ``_`` (``db-url`` → ``CHAINMILL_DB_URL``)."""
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def field_name(self) -> str:
        """The RuntimeConfig attribute (``db-url`` → ``db_url``)."""
        return self.name.replace("-", "_")


def parse_bind(entry: str, default_port: int) -> tuple[str, int]:
    """A ``bind`` entry as (IP, port): ``IP``, ``IP:port`` or ``[IPv6]:port``, as MultiChain's
    ``-bind`` (an IP literal, no host names); raises ConfigError."""
    text = entry.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"bind: {entry!r} is not IP, IP:port or [IPv6]:port")
        if rest:
            port = _bind_port(entry, rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _bind_port(entry, port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"bind: {entry!r} is not IP, IP:port or [IPv6]:port") from None
    return host, port


def _bind_port(entry: str, text: str) -> int:
    if not _INT_TEXT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"bind: {entry!r} has no valid port (1 - 65535)")
    return int(text)


_r = RuntimeSpec  # the table reads better with a short name

_TABLE: tuple[RuntimeSpec, ...] = (
    # JSON-RPC server
    _r("rpcuser", "str", DEFAULT_RPCUSER, "JSON-RPC Basic-auth user."),
    _r("rpcpassword", "str", "", "JSON-RPC Basic-auth password; must be set and differ from rpcuser."),
    _r("rpcport", "int", None, "JSON-RPC port; default: the chain's default-rpc-port.", 1, 65535),
    _r("rpcallowip", "networks", (), "Client IP, IP/netmask or IP/CIDR allowed besides loopback."),
    _r("rpcbind", "list", (), "Addresses to bind the JSON-RPC server to (with rpcallowip)."),
    _r("rpcallowmethod", "methods", (), "Permitted JSON-RPC methods; empty: all."),
    _r("metricsallowip", "networks", (), "Client IP, IP/netmask or IP/CIDR that may read "
       "/health and /metrics without credentials besides loopback (it must pass rpcallowip)."),
    _r("rpckeepalive", "bool", True, "Keep HTTP connections open between requests (0 turns it off)."),
    _r("rpcthreads", "int", 4, "JSON-RPC worker threads.", 1, 1024),
    _r("rpcmaxbody", "int", 32 * 1024 * 1024, "Largest accepted JSON-RPC request body in bytes.",
       1024, 2**31 - 1),
    _r("rpcmaxconnections", "int", 256, "Most open JSON-RPC connections at once (also capped by "
       "the RPC share of the file descriptors).", 1, 100_000),
    _r("rpcmaxconnectionsperip", "int", 64, "Most open JSON-RPC connections from one client "
       "address.", 1, 100_000),
    _r("rpcservertimeout", "int", 30, "Seconds a JSON-RPC connection may stay idle or take to "
       "send its request before it is closed.", 1, 86400),
    _r("rpcssl", "bool", False, "Serve JSON-RPC over TLS (https)."),
    _r("rpcsslcertificatechainfile", "str", "server.cert", "TLS certificate chain (PEM) for "
       "rpcssl; relative to the chain directory."),
    _r("rpcsslprivatekeyfile", "str", "server.pem", "TLS private key (PEM) for rpcssl; relative "
       "to the chain directory."),
    # peer-to-peer
    _r("port", "int", None, "P2P listen port; default: the chain's default-network-port.", 1, 65535),
    _r("listen", "bool", True, "Accept incoming P2P connections."),
    _r("bind", "list", (), "Addresses (IP or IP:port, [IPv6]:port) the P2P listener binds to; "
       "default: all interfaces."),
    _r("addnode", "list", (), "Peer host:port to connect to, besides discovered ones."),
    _r("connect", "list", (), "Connect only to these peers (host:port)."),
    _r("externalip", "list", (), "Own public address to advertise to peers."),
    _r("maxconnections", "int", 125, "Most P2P connections at once.", 0, 100_000),
    _r("handshakelocal", "str", None, "Address that proves connect permission in the handshake."),
    # hooks
    _r("walletnotify", "str", None, "Command run when a wallet-relevant tx is first seen or confirmed."),
    _r("walletnotifynew", "str", None, "Command run when a wallet-relevant tx is first seen."),
    _r("blocknotify", "str", None, "Command run when the best block changes."),
    _r("hooktimeout", "float", 30.0, "Seconds a hook command may run before it is killed.",
       0.1, 86400.0),
    # mining and chain behaviour (None: take the value from params.dat)
    _r("autosubscribe", "list", (), "Subscribe to new entities automatically: streams, assets.",
       choices=("streams", "assets")),
    _r("miningturnover", "float", None, "Overrides mining-turnover.", 0.0, 1.0),
    _r("mineemptyrounds", "float", None, "Overrides mine-empty-rounds.", -1.0, 1000.0),
    _r("miningrequirespeers", "bool", None, "Overrides mining-requires-peers."),
    _r("lockadminminerounds", "int", None, "Overrides lock-admin-mine-rounds.", 0, 10000),
    _r("gen", "bool", True, "Produce blocks when permitted."),
    # API output
    _r("maxshowndata", "int", 16384, "Largest data shown inline in API outputs, bytes.", 0, 2**31 - 1),
    _r("maxqueryscanitems", "int", 5000, "Scan limit of stream query methods.", 0, 2**31 - 1),
    _r("v1apicompatible", "bool", False, "MultiChain 1.0 output shapes."),
    _r("hideknownopdrops", "bool", False, "Hide recognised metadata in script outputs."),
    # storage, start-up and logging
    _r("db-url", "str", None, "SQLAlchemy URL of the chain store; default: SQLite in the chain directory."),
    _r("txindex", "bool", True, "Keep a full transaction index."),
    _r("reindex", "bool", False, "Rebuild the indexes at start."),
    _r("checkblocks", "int", 6, "Blocks checked against the store at start; 0: all.", 0, 2**31 - 1),
    _r("newwallet", "bool", False, "Create a new wallet when a used chain's wallet is missing."),
    _r("rescan", "bool", False, "Rescan the chain for wallet transactions at start."),
    _r("offline", "bool", False, "Start without the network."),
    _r("storeruntimeparams", "bool", False, "Persist setruntimeparam changes."),
    _r("shortoutput", "bool", False, "At start print only the connection string or the address."),
    _r("initprivkey", "str", None, "WIF private key for the wallet's default address at first start."),
    _r("debug", "list", (), "Debug log categories (1 or all: everything)."),
    _r("printtoconsole", "bool", False, "Log to the console instead of debug.log."),
    _r("logdir", "str", None, "Directory for debug.log; default: the chain directory."),
)

RUNTIME_SPECS: Mapping[str, RuntimeSpec] = MappingProxyType({spec.name: spec for spec in _TABLE})
"""Every known runtime parameter by name."""

_REPEATABLE = frozenset({"list", "networks", "methods"})
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = frozenset({"", "1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class RuntimeConfig:
    """The merged runtime settings of one node. Built by merge_runtime; checked on creation."""

    rpcuser: str = DEFAULT_RPCUSER
    rpcpassword: str = ""
    rpcport: int | None = None
    rpcallowip: tuple[IPNetwork, ...] = ()
    rpcbind: tuple[str, ...] = ()
    rpcallowmethod: tuple[str, ...] = ()
    metricsallowip: tuple[IPNetwork, ...] = ()
    rpckeepalive: bool = True
    rpcthreads: int = 4
    rpcmaxbody: int = 32 * 1024 * 1024
    rpcmaxconnections: int = 256
    rpcmaxconnectionsperip: int = 64
    rpcservertimeout: int = 30
    rpcssl: bool = False
    rpcsslcertificatechainfile: str | None = "server.cert"
    rpcsslprivatekeyfile: str | None = "server.pem"
    port: int | None = None
    listen: bool = True
    bind: tuple[str, ...] = ()
    addnode: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()
    externalip: tuple[str, ...] = ()
    maxconnections: int = 125
    handshakelocal: str | None = None
    walletnotify: str | None = None
    walletnotifynew: str | None = None
    blocknotify: str | None = None
    hooktimeout: float = 30.0
    autosubscribe: tuple[str, ...] = ()
    miningturnover: float | None = None
    mineemptyrounds: float | None = None
    miningrequirespeers: bool | None = None
    lockadminminerounds: int | None = None
    gen: bool = True
    maxshowndata: int = 16384
    maxqueryscanitems: int = 5000
    v1apicompatible: bool = False
    hideknownopdrops: bool = False
    db_url: str | None = None
    txindex: bool = True
    reindex: bool = False
    checkblocks: int = 6
    newwallet: bool = False
    rescan: bool = False
    offline: bool = False
    storeruntimeparams: bool = False
    shortoutput: bool = False
    initprivkey: str | None = field(default=None, repr=False)
    debug: tuple[str, ...] = ()
    printtoconsole: bool = False
    logdir: str | None = None

    def __post_init__(self) -> None:
        if not self.rpcpassword:
            raise ConfigError(
                "rpcpassword is not set (it belongs in the chain's chainmill.conf); "
                "refusing to start without RPC credentials"
            )
        if self.rpcpassword == self.rpcuser:
            raise ConfigError("rpcpassword must differ from rpcuser; refusing to start")
        for name in ("rpcport", "port"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 65535:
                raise ConfigError(f"{name}: {value} is out of range (1 - 65535)")
        for entry in self.bind:
            parse_bind(entry, 1)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={'***' if f.name == 'rpcpassword' else repr(getattr(self, f.name))}"
            for f in fields(self)
            if f.repr
        )
        return f"RuntimeConfig({shown})"

    def allows_ip(self, address: str) -> bool:
        """Whether a JSON-RPC client at ``address`` passes the source filter (loopback always does)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.is_loopback:
            return True
        return any(ip.version == net.version and ip in net for net in self.rpcallowip)


# ---------------------------------------------------------------- values


def _lookup(name: str) -> RuntimeSpec:
    spec = RUNTIME_SPECS.get(name) or RUNTIME_SPECS.get(name.replace("_", "-"))
    if spec is None:
        raise ConfigError(f"unknown runtime parameter {name!r}")
    return spec


def _parse_network(text: str, name: str = "rpcallowip") -> IPNetwork:
    try:
        if "/" in text:
            address, mask = text.split("/", 1)
            if "." in mask:  # ip/netmask, e.g. 10.0.0.0/255.0.0.0
                return ipaddress.ip_network(f"{address}/{mask}", strict=False)
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an IP, IP/netmask or IP/CIDR") from None


def _split_list(values: Sequence[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def parse_runtime_value(spec: RuntimeSpec, values: Sequence[str]) -> object:
    """The typed value of ``spec`` from its text values (several for repeatable parameters).

    Scalars take the last value. Raises ConfigError naming the parameter.
    """
    kind = spec.kind
    if kind in _REPEATABLE:
        items = _split_list(values)
        if kind == "networks":
            return tuple(_parse_network(item, spec.name) for item in items)
        if kind == "methods":
            return tuple(dict.fromkeys(item.lower() for item in items))
        for item in items:
            if spec.choices and item not in spec.choices:
                raise ConfigError(
                    f"{spec.name}: {item!r} is not one of {', '.join(spec.choices)}"
                )
        return tuple(dict.fromkeys(items))
    text = values[-1].strip() if values else ""
    if kind == "str":
        if spec.name in ("rpcuser", "rpcpassword"):
            return text
        return text or None
    if kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{spec.name}: expected 1 or 0 (true or false), got {text!r}")
    number: int | float
    if kind == "int":
        if not _INT_TEXT.fullmatch(text):
            raise ConfigError(f"{spec.name}: expected an integer, got {text!r}")
        number = int(text)
    else:
        if not _FLOAT_TEXT.fullmatch(text) or not math.isfinite(float(text)):
            raise ConfigError(f"{spec.name}: expected a number, got {text!r}")
        number = float(text)
    if (spec.minimum is not None and number < spec.minimum) or (
        spec.maximum is not None and number > spec.maximum
    ):
        raise ConfigError(
            f"{spec.name}: {text} is out of range ({spec.minimum} - {spec.maximum})"
        )
    return number


def _as_texts(value: object) -> list[str] | None:
    """Text values of a setting given as text, a list of texts or a typed value; None: unset."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        return ["1" if value else "0"]
    if isinstance(value, int | float):
        return [repr(value)]
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return [str(value)]
    if isinstance(value, Sequence):
        return [text for item in value for text in (_as_texts(item) or [])]
    raise ConfigError(f"cannot use {value!r} as a runtime parameter value")


# ---------------------------------------------------------------- merge


def merge_runtime(
    *,
    defaults: Mapping[str, object],
    global_file: Mapping[str, Sequence[str]],
    chain_file: Mapping[str, Sequence[str]],
    environ: Mapping[str, str],
    cli: Mapping[str, object],
) -> RuntimeConfig:
    """Merge every source of runtime settings into one checked RuntimeConfig.

    Precedence: ``cli`` > ``environ`` (``CHAINMILL_<NAME>``, only known names are looked at)
    > ``chain_file`` > ``global_file`` > ``defaults`` > the table's defaults. The highest
    source that sets a parameter supplies all its values (lists are not concatenated across
    sources). ``cli`` and ``defaults`` may hold text or typed values; ``None`` means not given;
    their keys may use ``_`` for ``-``. Unknown keys are refused by name with ConfigError.
    """
    layers: list[tuple[str, dict[str, list[str]]]] = []
    for label, source in (("command line", cli), ("chain config file", chain_file),
                          ("global config file", global_file), ("defaults", defaults)):
        texts: dict[str, list[str]] = {}
        for key, value in source.items():
            try:
                spec = _lookup(key)
            except ConfigError:
                raise ConfigError(f"unknown runtime parameter {key!r} ({label})") from None
            as_texts = _as_texts(value)
            if as_texts is not None:
                texts[spec.name] = as_texts
        layers.append((label, texts))
    env_texts: dict[str, list[str]] = {}
    for spec in _TABLE:
        if spec.env_name in environ:
            env_texts[spec.name] = [environ[spec.env_name]]
    layers.insert(1, ("environment", env_texts))

    values: dict[str, object] = {}
    for spec in _TABLE:
        for label, texts in layers:
            if spec.name in texts:
                where = f"{spec.env_name} in the environment" if label == "environment" else label
                try:
                    values[spec.field_name] = parse_runtime_value(spec, texts[spec.name])
                except ConfigError as exc:
                    raise ConfigError(f"{exc} ({where})") from None
                break
        else:
            values[spec.field_name] = spec.default
    return RuntimeConfig(**values)  # type: ignore[arg-type]


def runtime_defaults(params: ChainParams) -> dict[str, object]:
    """Node defaults taken from the chain parameters (ports, mining behaviour) for merge_runtime."""
    return {
        "rpcport": params.rpc_port,
        "port": params.network_port,
        "miningturnover": params["mining-turnover"],
        "mineemptyrounds": params["mine-empty-rounds"],
        "miningrequirespeers": params["mining-requires-peers"],
        "lockadminminerounds": params["lock-admin-mine-rounds"],
    }


def load_runtime_config(
    datadir: str | os.PathLike[str],
    chain: str,
    *,
    cli: Mapping[str, object] | None = None,
    environ: Mapping[str, str] = os.environ,
    defaults: Mapping[str, object] | None = None,
) -> RuntimeConfig:
    """Read the global and the chain's chainmill.conf (each optional) and merge with the rest."""
    global_path = global_conf_path(datadir)
    chain_path = Path(datadir) / validate_chain_name(chain) / CONF_FILE
    return merge_runtime(
        defaults=defaults or {},
        global_file=read_conf_file(global_path) if global_path.exists() else {},
        chain_file=read_conf_file(chain_path) if chain_path.exists() else {},
        environ=environ,
        cli=cli or {},
    )


# ---------------------------------------------------------------- files


def read_conf_file(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read ``name=value`` lines (``#`` comment lines, blank lines) into name -> values.

    Repeatable parameters (rpcallowip, addnode, ...) collect every line; unknown names,
    a scalar set twice and bad values are refused with the file and line in the message.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None

    result: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{path}:{number}: expected 'name=value', got {line!r}")
        spec = RUNTIME_SPECS.get(name)
        if spec is None:
            raise ConfigError(f"{path}:{number}: unknown runtime parameter {name!r}")
        if name in first_line and spec.kind not in _REPEATABLE:
            raise ConfigError(
                f"{path}:{number}: duplicate parameter {name!r} (first set on line {first_line[name]})"
            )
        try:
            parse_runtime_value(spec, [value])
        except ConfigError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        first_line.setdefault(name, number)
        result.setdefault(name, []).append(value)
    return result


def render_conf(mapping: Mapping[str, str | Sequence[str]]) -> str:
    """``name=value`` lines for ``mapping``; repeatable values give one line each."""
    lines = []
    for name, value in mapping.items():
        spec = _lookup(name)
        values = [value] if isinstance(value, str) else list(value)
        if len(values) > 1 and spec.kind not in _REPEATABLE:
            raise ConfigError(f"runtime parameter {name!r} takes one value")
        for item in values:
            if any(c in item for c in "\r\n\0"):
                raise ConfigError(f"{name}: value may not contain line breaks")
            lines.append(f"{spec.name}={item}")
    return "".join(line + "\n" for line in lines)


def write_conf_file(path: str | os.PathLike[str], mapping: Mapping[str, str | Sequence[str]]) -> None:
    """Write a chainmill.conf, mode 0600, atomically (it may hold the RPC password)."""
    write_private_file(path, render_conf(mapping))


def remember_settings(chain_dir: str | os.PathLike[str], values: Mapping[str, object]) -> bool:
    """Write ``values`` (e.g. the ports and db-url a node was started with) into the chain's
    chainmill.conf, replacing earlier values of the same names, so that a later plain
    ``chainmill start CHAIN`` and ``chainmill cli CHAIN`` use them. Returns whether it wrote."""
    conf = Path(chain_dir) / CONF_FILE
    current = read_conf_file(conf) if conf.exists() else {}
    changed = False
    for name, value in values.items():
        spec = _lookup(name)
        texts = _as_texts(value)
        if texts is None or current.get(spec.name) == texts:
            continue
        parse_runtime_value(spec, texts)
        current[spec.name] = texts
        changed = True
    if changed:
        write_conf_file(conf, current)
    return changed


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58(data: bytes) -> str:
    """Base58 text of ``data`` (Bitcoin alphabet, leading zero bytes as '1')."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_BASE58[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def ensure_chain_conf(chain_dir: Path, rng: random.Random | None = None) -> None:
    """Create ``<chain_dir>/chainmill.conf`` with fresh RPC credentials unless it exists.

    Writes ``rpcuser=chainmillrpc`` and ``rpcpassword=<base58 of 32 random bytes>``. An
    existing file is never overwritten (even by a concurrent caller: the file appears by
    hard link, which fails if the name is taken); its mode is set to 0600 in every case.
    """
    rng = rng if rng is not None else secrets.SystemRandom()
    chain_dir = Path(chain_dir)
    chain_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = chain_dir / CONF_FILE
    if not target.exists():
        password = base58(rng.getrandbits(256).to_bytes(32, "big"))
        text = render_conf({"rpcuser": DEFAULT_RPCUSER, "rpcpassword": password})
        fd, tmp_name = tempfile.mkstemp(prefix=f".{CONF_FILE}.", suffix=".tmp", dir=chain_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                os.fchmod(tmp.fileno(), 0o600)
                tmp.write(text)
                tmp.flush()
                os.fsync(tmp.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp_name, target)
        finally:
            os.unlink(tmp_name)
    os.chmod(target, 0o600)


# -- setruntimeparam --------------------------------------------------------------------------
# The parameters MultiChain 2.3's setruntimeparam accepts (rpcmisc.cpp), by value kind, minus
# its test-only dropmessagestest and internal compatibility. Every value is checked before
# anything changes, with MultiChain's messages; each refusal is a ConfigError (-8 over RPC).
SETTABLE_RUNTIME: Mapping[str, str] = MappingProxyType({
    "miningrequirespeers": "bool", "mineemptyblocks": "bool", "mineblocksondemand": "bool",
    "hideknownopdrops": "bool", "lockinlinemetadata": "bool",
    "mineemptyrounds": "float", "miningturnover": "fraction",
    "lockadminminerounds": "count", "maxshowndata": "count", "maxqueryscanitems": "count",
    "acceptfiltertimeout": "count", "sendfiltertimeout": "count",
    "bantx": "txids", "lockblock": "blockhash", "handshakelocal": "address",
    "autosubscribe": "autosubscribe",
})
"""Name → kind of every parameter `setruntimeparam` may change while the node runs."""

_SET_TRUE = frozenset({"true", "yes", "on"})
_SET_FALSE = frozenset({"false", "no", "off", ""})
_HEX64_TEXT = re.compile(r"[0-9a-fA-F]{64}")
_AUTOSUBSCRIBE = ("streams", "assets")


def _value_type_error() -> ConfigError:
    return ConfigError("Invalid parameter value type")


def lenient_bool(value: object) -> bool:
    """A boolean as setruntimeparam accepts it (raises ConfigError); also used by RPC."""
    # MultiChain's paramtobool(value, strict=false): booleans, integers, "true" and integer
    # strings; chainmill also refuses words that are neither (atoi would read them as 0).
    if value is True or value is False:
        return value
    if type(value) is int:
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _SET_TRUE:
            return True
        if word in _SET_FALSE:
            return False
        if _INT_TEXT.fullmatch(word):
            return int(word) != 0
    raise ConfigError("Invalid parameter value type, should be boolean")


def _set_number(value: object, integer: bool) -> int | float:
    if isinstance(value, bool):
        raise _value_type_error()
    if isinstance(value, int):
        return value
    if isinstance(value, float) and not integer and math.isfinite(value):
        return value
    if isinstance(value, str):
        text = value.strip()
        if integer and _INT_TEXT.fullmatch(text):
            return int(text)
        if not integer and _FLOAT_TEXT.fullmatch(text) and math.isfinite(float(text)):
            return float(text)
    raise _value_type_error()


def parse_setruntimeparam(name: str, value: object) -> object:
    """The typed value `setruntimeparam name value` sets, or ConfigError with MultiChain's text.

    An ``address`` kind is returned as the string; the caller checks it with the chain's
    address codec (MultiChain: RPC_INVALID_ADDRESS_OR_KEY).
    """
    kind = SETTABLE_RUNTIME.get(name)
    if kind is None:
        raise ConfigError(f"Unsupported runtime parameter: {name}")
    if kind == "bool":
        return lenient_bool(value)
    if kind in ("float", "fraction"):
        number = float(_set_number(value, integer=False))
        if kind == "fraction" and not 0.0 <= number <= 1.0:
            raise ConfigError("Should be in range (0,1)")
        if name == "mineemptyrounds" and number < -1:
            raise ConfigError("Should be -1 (off) or non-negative")
        return number
    if kind == "count":
        number = int(_set_number(value, integer=True))
        if number < 0:
            raise ConfigError("Should be non-negative")
        if number > 2**31 - 1:
            raise ConfigError("Should be at most 2147483647")
        return number
    if not isinstance(value, str):
        raise _value_type_error()
    text = value.strip()
    if kind == "txids":
        txids = [t.strip() for t in text.split(",") if t.strip()]
        for txid in txids:
            if not _HEX64_TEXT.fullmatch(txid):
                raise ConfigError(f"Invalid txid: {txid}")
        return ",".join(t.lower() for t in txids)
    if kind == "blockhash":
        if text and not _HEX64_TEXT.fullmatch(text):
            raise ConfigError(f"Invalid block hash: {text}")
        return text.lower()
    if kind == "autosubscribe":
        words = tuple(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
        if any(w not in _AUTOSUBSCRIBE for w in words) or (text and not words):
            raise ConfigError("Invalid parameter value")
        return words
    if not text:
        raise ConfigError("Invalid address")
    return text
