"""Chain parameters (``params.dat``) in MultiChain's format: the table, typed values, file I/O, hash.

``chainmill create`` writes the file with defaults and generated values; a user may edit it
until the first start; the first start fills in the genesis values and ``chain-params-hash``
and the set is locked from then on (see spec §5).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import secrets
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from config.errors import ConfigError
from config.paths import validate_chain_name, write_private_file

PROTOCOL_VERSION = 20013
"""The chain protocol version chainmill creates and speaks (MultiChain 2.x numbering)."""

ParamType = Literal["str", "bool", "int", "float", "hex"]
ParamValue = str | bool | int | float | bytes | None
"""A typed parameter value; ``hex`` parameters hold ``bytes``; ``None`` means unset."""

# Section titles, in file order; each is written as a ``# <title>`` heading.
BASIC = "Basic chain parameters"
PERMISSIONS = "Global permissions"
CONSENSUS = "Consensus requirements"
RUNTIME_DEFAULTS = "Defaults for node runtime parameters"
CURRENCY = "Native blockchain currency"
MINING = "Advanced mining parameters"
STD_LIMITS = "Standard transaction limits"
GENERATED = "Generated and calculated parameters"
SECTIONS = (BASIC, PERMISSIONS, CONSENSUS, RUNTIME_DEFAULTS, CURRENCY, MINING, STD_LIMITS, GENERATED)

_FRACTION_DIGITS = 6  # MultiChain keeps fractions as integer millionths; so do we.


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One blockchain parameter: its name, type, default and the values it accepts."""

    name: str
    """Hyphenated display name, as in params.dat and ``getblockchainparams``."""
    section: str
    """One of SECTIONS."""
    type: ParamType
    """Value type; ``hex`` values are bytes written as lowercase hex."""
    default: ParamValue
    """Default value; ``None`` for values generated at create time or filled in at first start."""
    description: str
    """One-line description, written as the line's comment."""
    minimum: int | float | None = None
    """Smallest value (int/float), or shortest length in characters (str) or bytes (hex)."""
    maximum: int | float | None = None
    """Largest value (int/float), or longest length in characters (str) or bytes (hex)."""
    choices: tuple[str, ...] = ()
    """For str parameters: the only accepted values, if not empty."""
    generated: bool = False
    """Produced by ``create`` or by the first start; refused as a ``--param`` override."""
    nullable: bool = False
    """May be unset (the genesis values and hashes before the first start)."""
    upgradable: bool = False
    """Can change later through a chain upgrade (MultiChain's "U" mark)."""
    check: Callable[[ParamValue], None] | None = None
    """Extra validation; raises ConfigError."""

    @property
    def compact_name(self) -> str:
        """The name without hyphens (``getblockchainparams`` with display-names=false)."""
        return self.name.replace("-", "")

    def range_text(self) -> str:
        """The allowed values in words, for the file comment and for error messages."""
        if self.choices:
            return " or ".join(self.choices)
        if self.type == "bool":
            return "true or false"
        lo, hi = self.minimum, self.maximum
        if self.type in ("int", "float"):
            if lo is None and hi is None:
                return ""
            if lo == hi:
                return _format_number(self.type, lo)
            return f"{_format_number(self.type, lo)} - {_format_number(self.type, hi)}"
        unit = "bytes" if self.type == "hex" else "chars"
        if lo is not None and lo == hi:
            return f"{lo} {unit}"
        if lo in (None, 0) and hi is not None:
            return f"max {hi} {unit}"
        if lo is not None and hi is not None:
            return f"{lo} - {hi} {unit}"
        return ""


def _format_number(kind: str, value: int | float | None) -> str:
    if value is None:
        return "any"
    return _format_float(float(value)) if kind == "float" else str(int(value))


def _check_chain_name(value: ParamValue) -> None:
    validate_chain_name(str(value))


_p = ParamSpec  # the table below reads better with a short name


_MAX_AMOUNT = 1_000_000_000_000_000_000
_UINT32 = 4_294_967_295

_TABLE: tuple[ParamSpec, ...] = (
    # -- Basic
    _p("chain-name", BASIC, "str", None,
       "Chain name, the first argument of chainmill start and chainmill cli.",
       1, 64, generated=True, check=_check_chain_name),
    _p("chain-protocol", BASIC, "str", "multichain",
       "Chain protocol: multichain (permissions, streams, native assets).",
       choices=("multichain",)),
    _p("chain-description", BASIC, "str", None,
       "Chain description, embedded in the genesis block coinbase; default 'chainmill <chain-name>'.",
       0, 90),
    _p("root-stream-name", BASIC, "str", "root",
       "Root stream name; empty for no root stream.", 0, 32),
    _p("root-stream-open", BASIC, "bool", True,
       "Anyone with send permission may write to the root stream."),
    _p("chain-is-testnet", BASIC, "bool", False,
       "Shown as testnet in API outputs; no other effect."),
    _p("target-block-time", BASIC, "float", 15.0,
       "Target time between blocks in seconds (chainmill accepts fractions).",
       0.1, 86400.0, upgradable=True),
    _p("maximum-block-size", BASIC, "int", 8_388_608,
       "Maximum block size in bytes.", 5000, 1_000_000_000, upgradable=True),
    _p("maximum-chunk-size", BASIC, "int", 1_048_576,
       "Maximum size of off-chain chunks in bytes.", 1024, 16_777_216),
    _p("maximum-chunk-count", BASIC, "int", 1024,
       "Maximum number of chunks in one off-chain item.", 16, 1_048_576),
    _p("default-network-port", BASIC, "int", None,
       "Default TCP port for peer-to-peer connections (random odd number at create).",
       1024, 65535),
    _p("default-rpc-port", BASIC, "int", None,
       "Default TCP port for JSON-RPC API requests (network port - 1 at create).",
       1024, 65535),
    # -- Global permissions
    _p("anyone-can-connect", PERMISSIONS, "bool", False,
       "Anyone can connect, i.e. read the chain.", upgradable=True),
    _p("anyone-can-send", PERMISSIONS, "bool", False,
       "Anyone can send, i.e. sign transaction inputs.", upgradable=True),
    _p("anyone-can-receive", PERMISSIONS, "bool", False,
       "Anyone can receive, i.e. appear in transaction outputs.", upgradable=True),
    _p("anyone-can-receive-empty", PERMISSIONS, "bool", True,
       "Outputs carrying no value or assets need no receive permission.", upgradable=True),
    _p("anyone-can-create", PERMISSIONS, "bool", False,
       "Anyone can create new streams.", upgradable=True),
    _p("anyone-can-issue", PERMISSIONS, "bool", False,
       "Anyone can issue new native assets.", upgradable=True),
    _p("anyone-can-mine", PERMISSIONS, "bool", False,
       "Anyone can mine blocks (confirm transactions)."),
    _p("anyone-can-activate", PERMISSIONS, "bool", False,
       "Anyone can grant or revoke connect, send and receive.", upgradable=True),
    _p("anyone-can-admin", PERMISSIONS, "bool", False,
       "Anyone can grant or revoke all permissions."),
    _p("support-miner-precheck", PERMISSIONS, "bool", True,
       "Transactions carry the spent script so miners can pre-check permissions."),
    _p("allow-arbitrary-outputs", PERMISSIONS, "bool", False,
       "Allow output scripts without a clear destination."),
    _p("allow-p2sh-outputs", PERMISSIONS, "bool", True,
       "Allow pay-to-script-hash outputs (ignored if arbitrary outputs are allowed)."),
    _p("allow-multisig-outputs", PERMISSIONS, "bool", True,
       "Allow bare multisignature outputs (ignored if arbitrary outputs are allowed)."),
    # -- Consensus requirements
    _p("setup-first-blocks", CONSENSUS, "int", 60,
       "Length of the setup phase in blocks: no diversity rule, admin consensus or peer requirement.",
       1, 31_536_000),
    _p("mining-diversity", CONSENSUS, "float", 0.75,
       "Miners must rotate: a miner may sign one block in every ceil(miners x diversity).",
       0.0, 1.0),
    _p("admin-consensus-upgrade", CONSENSUS, "float", 0.5,
       "Share of admins that must agree to a chain upgrade.", 0.0, 1.0),
    _p("admin-consensus-txfilter", CONSENSUS, "float", 0.5,
       "Share of admins that must agree to approve a transaction filter.", 0.0, 1.0),
    _p("admin-consensus-admin", CONSENSUS, "float", 0.5,
       "Share of admins that must agree to change admin permissions.", 0.0, 1.0),
    _p("admin-consensus-activate", CONSENSUS, "float", 0.5,
       "Share of admins that must agree to change activate permissions.", 0.0, 1.0),
    _p("admin-consensus-mine", CONSENSUS, "float", 0.5,
       "Share of admins that must agree to change mine permissions.", 0.0, 1.0),
    _p("admin-consensus-create", CONSENSUS, "float", 0.0,
       "Share of admins that must agree to change create permissions.", 0.0, 1.0),
    _p("admin-consensus-issue", CONSENSUS, "float", 0.0,
       "Share of admins that must agree to change issue permissions.", 0.0, 1.0),
    # -- Defaults for node runtime parameters
    _p("lock-admin-mine-rounds", RUNTIME_DEFAULTS, "int", 10,
       "Ignore forks that would undo admin or mine changes older than this many mining rounds.",
       0, 10000),
    _p("mining-requires-peers", RUNTIME_DEFAULTS, "bool", True,
       "Mine only while connected to at least one peer (unless the only permitted miner)."),
    _p("mine-empty-rounds", RUNTIME_DEFAULTS, "float", 10.0,
       "Rounds of empty blocks before pausing until a transaction arrives; negative: never pause.",
       -1.0, 1000.0),
    _p("mining-turnover", RUNTIME_DEFAULTS, "float", 0.5,
       "0: a stable subset of miners takes turns; 1: all permitted miners take part at random.",
       0.0, 1.0),
    # -- Native blockchain currency
    _p("initial-block-reward", CURRENCY, "int", 0,
       "Initial block mining reward in raw native currency units.", 0, _MAX_AMOUNT),
    _p("first-block-reward", CURRENCY, "int", -1,
       "Reward for block 1 only; negative: use the initial block reward.", -1, _MAX_AMOUNT),
    _p("reward-halving-interval", CURRENCY, "int", 52_560_000,
       "Blocks between halvings of the block reward.", 60, _UINT32),
    _p("reward-spendable-delay", CURRENCY, "int", 1,
       "Blocks before a mining reward can be spent.", 1, 100_000),
    _p("minimum-per-output", CURRENCY, "int", 0,
       "Minimum raw units per output (anti-dust); -1: derive from the relay fee.",
       -1, 1_000_000_000),
    _p("maximum-per-output", CURRENCY, "int", 100_000_000_000_000,
       "Maximum raw units per output.", 0, _MAX_AMOUNT),
    _p("minimum-offchain-fee", CURRENCY, "int", 0,
       "Minimum fee per 1000 bytes of off-chain data, in raw units.", 0, 1_000_000_000),
    _p("minimum-relay-fee", CURRENCY, "int", 0,
       "Minimum fee per 1000 bytes of a relayed transaction, in raw units.", 0, 1_000_000_000),
    _p("native-currency-multiple", CURRENCY, "int", 100_000_000,
       "Raw units per display unit of the native currency.", 0, 1_000_000_000),
    # -- Advanced mining parameters
    _p("skip-pow-check", MINING, "bool", False,
       "Do not verify that block hashes meet the proof-of-work target."),
    _p("pow-minimum-bits", MINING, "int", 8,
       "Initial and minimum proof-of-work difficulty in leading zero bits.", 1, 32),
    _p("target-adjust-freq", MINING, "int", -1,
       "Seconds between difficulty adjustments; negative: never adjust.", -1, _UINT32),
    _p("allow-min-difficulty-blocks", MINING, "bool", False,
       "Allow minimum-difficulty blocks after twice the target block time."),
    # -- Standard transaction limits
    _p("only-accept-std-txs", STD_LIMITS, "bool", True,
       "Relay and accept only standard transactions."),
    _p("max-std-tx-size", STD_LIMITS, "int", 4_194_304,
       "Maximum standard transaction size in bytes.", 1024, 100_000_000, upgradable=True),
    _p("max-std-op-returns-count", STD_LIMITS, "int", 32,
       "Maximum number of metadata (OP_RETURN) outputs per transaction.", 0, 1024,
       upgradable=True),
    _p("max-std-op-return-size", STD_LIMITS, "int", 2_097_152,
       "Maximum bytes of metadata in one output.", 0, 67_108_864, upgradable=True),
    _p("max-std-op-drops-count", STD_LIMITS, "int", 5,
       "Maximum number of OP_DROP elements per output.", 0, 100, upgradable=True),
    _p("max-std-element-size", STD_LIMITS, "int", 40_000,
       "Maximum bytes of one script data element (keys, entity markers).", 128, 80_000,
       upgradable=True),
    _p("max-std-op-drop-size", STD_LIMITS, "int", 64,
       "Obsolete; kept for compatibility.", 0, 32_768),
    # -- Generated at create time / calculated at first start
    _p("protocol-version", GENERATED, "int", PROTOCOL_VERSION,
       "Protocol version at chain creation.", PROTOCOL_VERSION, PROTOCOL_VERSION, generated=True),
    _p("network-message-start", GENERATED, "hex", None,
       "Magic bytes that start every peer-to-peer message.", 4, 4, generated=True),
    _p("address-pubkeyhash-version", GENERATED, "hex", None,
       "Version bytes of public key hash addresses.", 1, 4, generated=True),
    _p("address-scripthash-version", GENERATED, "hex", None,
       "Version bytes of script hash addresses.", 1, 4, generated=True),
    _p("private-key-version", GENERATED, "hex", None,
       "Version bytes of exported private keys.", 1, 4, generated=True),
    _p("address-checksum-value", GENERATED, "hex", None,
       "Value XOR-ed into address checksums.", 4, 4, generated=True),
    _p("genesis-pubkey", GENERATED, "hex", None,
       "Public key of the genesis block's coinbase (filled in at first start).", 33, 65,
       generated=True, nullable=True),
    _p("genesis-version", GENERATED, "int", None,
       "Genesis block version (filled in at first start).", 1, 2_147_483_647,
       generated=True, nullable=True),
    _p("genesis-timestamp", GENERATED, "int", None,
       "Genesis block time, Unix seconds (filled in at first start).", 0, _UINT32,
       generated=True, nullable=True),
    _p("genesis-nbits", GENERATED, "int", None,
       "Genesis block difficulty bits (filled in at first start).", 0, _UINT32,
       generated=True, nullable=True),
    _p("genesis-nonce", GENERATED, "int", None,
       "Genesis block nonce (filled in at first start).", 0, _UINT32,
       generated=True, nullable=True),
    _p("genesis-pubkey-hash", GENERATED, "hex", None,
       "Hash of the genesis public key (filled in at first start).", 20, 20,
       generated=True, nullable=True),
    _p("genesis-op-return-script", GENERATED, "hex", None,
       "Metadata script of the genesis coinbase (filled in at first start).", 0, 100_000,
       generated=True, nullable=True),
    _p("genesis-hash", GENERATED, "hex", None,
       "Genesis block hash (filled in at first start; set means locked).", 32, 32,
       generated=True, nullable=True),
    _p("chain-params-hash", GENERATED, "hex", None,
       "Hash of all parameters, detects edits after the first start.", 32, 32,
       generated=True, nullable=True),
)

PARAM_SPECS: Mapping[str, ParamSpec] = MappingProxyType({spec.name: spec for spec in _TABLE})
"""Every blockchain parameter by hyphenated name, in file order."""

_PERMISSIONS_ANYONE = ("connect", "send", "receive", "receive-empty", "create", "issue",
                       "mine", "activate", "admin")
_PERMISSIONS_CONSENSUS = ("upgrade", "txfilter", "admin", "activate", "mine", "create", "issue")
_NOT_HASHED = frozenset({"chain-params-hash", "genesis-hash"})

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


# ---------------------------------------------------------------- values


def _format_float(value: float) -> str:
    text = f"{value:.{_FRACTION_DIGITS}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def format_value(spec: ParamSpec, value: ParamValue) -> str:
    """The params.dat text of a value: strings raw, true/false, decimals, lowercase hex, '' if unset."""
    if value is None:
        return ""
    if spec.type == "bool":
        return "true" if value else "false"
    if spec.type == "float":
        return _format_float(float(value))  # type: ignore[arg-type]
    if spec.type == "hex":
        return bytes(value).hex()  # type: ignore[arg-type]
    return str(value)


def parse_value(spec: ParamSpec, text: str) -> ParamValue:
    """Parse the text of a value (from params.dat or ``--param``), typed and range-checked.

    Raises ConfigError naming the parameter.
    """
    text = text.strip()
    if text == "" and spec.type != "str":
        if spec.nullable:
            return None
        raise ConfigError(f"{spec.name}: a value is required ({spec.range_text()})")
    value: ParamValue
    if spec.type == "str":
        value = text
    elif spec.type == "bool":
        lowered = text.lower()
        if lowered in ("true", "1"):
            value = True
        elif lowered in ("false", "0"):
            value = False
        else:
            raise ConfigError(f"{spec.name}: expected true or false, got {text!r}")
    elif spec.type == "int":
        if not _INT_TEXT.fullmatch(text):
            raise ConfigError(f"{spec.name}: expected an integer, got {text!r}")
        value = int(text)
    elif spec.type == "float":
        if not _FLOAT_TEXT.fullmatch(text):
            raise ConfigError(f"{spec.name}: expected a number, got {text!r}")
        value = float(text)
    else:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{spec.name}: expected hexadecimal bytes, got {text!r}") from None
    return check_value(spec, value)


def check_value(spec: ParamSpec, value: ParamValue) -> ParamValue:
    """Return ``value`` in its canonical type for ``spec`` after type and range checks.

    Accepts ints for float parameters and hex strings for hex parameters; floats are rounded
    to millionths, as MultiChain stores them. Raises ConfigError naming the parameter.
    """
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{spec.name}: a value is required ({spec.range_text()})")
    kind = spec.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{spec.name}: expected true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{spec.name}: expected a number, got {value!r}")
        if kind == "int":
            if not isinstance(value, int):
                raise ConfigError(f"{spec.name}: expected an integer, got {value!r}")
            number: int | float = value
        else:
            if not math.isfinite(value):
                raise ConfigError(f"{spec.name}: expected a finite number, got {value!r}")
            number = round(float(value), _FRACTION_DIGITS)
        if (spec.minimum is not None and number < spec.minimum) or (
            spec.maximum is not None and number > spec.maximum
        ):
            raise ConfigError(
                f"{spec.name}: {format_value(spec, number)} is out of range ({spec.range_text()})"
            )
        return number
    if kind == "hex":
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ConfigError(f"{spec.name}: expected hexadecimal bytes, got {value!r}") from None
        if not isinstance(value, bytes | bytearray):
            raise ConfigError(f"{spec.name}: expected bytes, got {value!r}")
        _check_length(spec, len(value))
        return bytes(value)
    if not isinstance(value, str):
        raise ConfigError(f"{spec.name}: expected text, got {value!r}")
    if value != value.strip() or any(c in value for c in "#\r\n\0"):
        raise ConfigError(
            f"{spec.name}: {value!r} may not contain '#' or line breaks, "
            "nor start or end with spaces"
        )
    _check_length(spec, len(value))
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{spec.name}: {value!r} is not supported ({spec.range_text()})")
    if spec.check is not None:
        spec.check(value)
    return value


def _check_length(spec: ParamSpec, length: int) -> None:
    if (spec.minimum is not None and length < spec.minimum) or (
        spec.maximum is not None and length > spec.maximum
    ):
        unit = "bytes" if spec.type == "hex" else "characters"
        raise ConfigError(f"{spec.name}: {length} {unit} is out of range ({spec.range_text()})")


def _check_consistency(values: Mapping[str, ParamValue]) -> None:
    """Rules that involve more than one parameter."""
    if values["default-network-port"] == values["default-rpc-port"]:
        raise ConfigError("default-network-port and default-rpc-port must differ")
    lengths = {
        len(values[name])  # type: ignore[arg-type]
        for name in ("address-pubkeyhash-version", "address-scripthash-version",
                     "private-key-version")
    }
    if len(lengths) != 1:
        raise ConfigError(
            "address-pubkeyhash-version, address-scripthash-version and private-key-version "
            "must have the same length"
        )


def _lookup(name: str) -> ParamSpec:
    try:
        return PARAM_SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown blockchain parameter {name!r}") from None


# ---------------------------------------------------------------- the set


class ChainParams(Mapping[str, ParamValue]):
    """An immutable, complete and checked set of blockchain parameters.

    Keys are the hyphenated names of PARAM_SPECS (in table order); values are typed
    (str, bool, int, float, bytes for hex, None for unset genesis values).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, ParamValue]) -> None:
        for name in values:
            _lookup(name)
        missing = [name for name in PARAM_SPECS if name not in values]
        if missing:
            raise ConfigError(f"missing blockchain parameter {missing[0]!r}")
        checked = {name: check_value(spec, values[name]) for name, spec in PARAM_SPECS.items()}
        _check_consistency(checked)
        self._values: Mapping[str, ParamValue] = MappingProxyType(checked)

    def __getitem__(self, name: str) -> ParamValue:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self) -> tuple[type[ChainParams], tuple[dict[str, ParamValue]]]:
        # picklable, so worker processes (e.g. parallel verification) can receive it
        return (ChainParams, (dict(self._values),))

    def __repr__(self) -> str:
        return f"ChainParams(chain_name={self._values['chain-name']!r}, locked={self.locked})"

    def replace(self, changes: Mapping[str, ParamValue]) -> ChainParams:
        """A copy with ``changes`` (hyphenated name -> typed value) applied and checked."""
        for name in changes:
            _lookup(name)
        return ChainParams({**self._values, **changes})

    def as_display(self) -> dict[str, object]:
        """JSON-ready dict with hyphenated names (``getblockchainparams``).

        Hex values become lowercase hex strings. ``target-block-time`` is shown as an integer
        when it is whole, as MultiChain shows it, so clients that type it as an integer keep
        working; fractions (chainmill only) are shown as floats.
        """
        return {name: _json_value(name, value) for name, value in self._values.items()}

    def as_compact(self) -> dict[str, object]:
        """As as_display, with hyphens removed from the names (display-names=false)."""
        return {name.replace("-", ""): _json_value(name, value)
                for name, value in self._values.items()}

    # -- conveniences

    @property
    def chain_name(self) -> str:
        return str(self._values["chain-name"])

    @property
    def protocol_version(self) -> int:
        return int(self._values["protocol-version"])  # type: ignore[arg-type]

    @property
    def target_block_time(self) -> float:
        return float(self._values["target-block-time"])  # type: ignore[arg-type]

    @property
    def mining_diversity(self) -> float:
        return float(self._values["mining-diversity"])  # type: ignore[arg-type]

    @property
    def setup_first_blocks(self) -> int:
        return int(self._values["setup-first-blocks"])  # type: ignore[arg-type]

    @property
    def maximum_block_size(self) -> int:
        return int(self._values["maximum-block-size"])  # type: ignore[arg-type]

    @property
    def max_std_tx_size(self) -> int:
        return int(self._values["max-std-tx-size"])  # type: ignore[arg-type]

    @property
    def max_std_element_size(self) -> int:
        return int(self._values["max-std-element-size"])  # type: ignore[arg-type]

    @property
    def max_std_op_returns_count(self) -> int:
        return int(self._values["max-std-op-returns-count"])  # type: ignore[arg-type]

    @property
    def network_port(self) -> int:
        return int(self._values["default-network-port"])  # type: ignore[arg-type]

    @property
    def rpc_port(self) -> int:
        return int(self._values["default-rpc-port"])  # type: ignore[arg-type]

    @property
    def message_start(self) -> bytes:
        return bytes(self._values["network-message-start"])  # type: ignore[arg-type]

    @property
    def locked(self) -> bool:
        """True once the first start has set ``genesis-hash``: the set may no longer change."""
        return self._values["genesis-hash"] is not None

    def anyone_can(self, perm: str) -> bool:
        """The ``anyone-can-<perm>`` flag (connect, send, receive, receive-empty, create, ...)."""
        if perm not in _PERMISSIONS_ANYONE:
            raise ConfigError(f"no anyone-can parameter for permission {perm!r}")
        return bool(self._values[f"anyone-can-{perm}"])

    def admin_consensus(self, perm: str) -> float:
        """The ``admin-consensus-<perm>`` share (admin, activate, mine, create, issue, upgrade, txfilter)."""
        if perm not in _PERMISSIONS_CONSENSUS:
            raise ConfigError(f"no admin-consensus parameter for {perm!r}")
        return float(self._values[f"admin-consensus-{perm}"])  # type: ignore[arg-type]


def _json_value(name: str, value: ParamValue) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if name == "target-block-time" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------- creation


def _random_bytes(rng: random.Random, count: int) -> bytes:
    return rng.getrandbits(8 * count).to_bytes(count, "big")


def default_params(
    chain_name: str,
    overrides: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> ChainParams:
    """A new editable parameter set for ``chain_name``: defaults, generated values, overrides.

    ``overrides`` map hyphenated names to text as given with ``--param NAME=VALUE``; each is
    parsed and range-checked. Unknown names and generated or calculated names are refused
    with ConfigError. ``rng`` (default: the system's secure generator) supplies the ports,
    the message start and the address constants; pass a seeded ``random.Random`` in tests.
    """
    validate_chain_name(chain_name)
    rng = rng if rng is not None else secrets.SystemRandom()
    overrides = overrides or {}
    parsed: dict[str, ParamValue] = {}
    for name, text in overrides.items():
        spec = _lookup(name)
        if spec.generated:
            raise ConfigError(f"blockchain parameter {name!r} is generated and cannot be set")
        parsed[name] = parse_value(spec, text)

    values: dict[str, ParamValue] = {name: spec.default for name, spec in PARAM_SPECS.items()}
    network_port = rng.randrange(10001, 65000, 2)
    values.update({
        "chain-name": chain_name,
        "chain-description": f"chainmill {chain_name}",
        "default-network-port": network_port,
        "default-rpc-port": network_port - 1,
        "network-message-start": _random_bytes(rng, 4),
        "address-pubkeyhash-version": b"\x00" + _random_bytes(rng, 3),
        "address-scripthash-version": b"\x05" + _random_bytes(rng, 3),
        "private-key-version": b"\x80" + _random_bytes(rng, 3),
        "address-checksum-value": _random_bytes(rng, 4),
    })
    if "default-network-port" in parsed and "default-rpc-port" not in parsed:
        port = int(parsed["default-network-port"])  # type: ignore[arg-type]
        parsed["default-rpc-port"] = check_value(PARAM_SPECS["default-rpc-port"], port - 1)
    values.update(parsed)
    return ChainParams(values)


# ---------------------------------------------------------------- the file


def write_params_file(path: str | os.PathLike[str], params: ChainParams) -> None:
    """Write ``params`` as params.dat text, mode 0600, atomically."""
    write_private_file(path, render_params(params))


def render_params(params: ChainParams) -> str:
    """The params.dat text of ``params``."""
    chain = params.chain_name
    lines = [
        f"# ==== chainmill chain parameters: {chain} ====",
        "#",
        f"# Protocol version: {params.protocol_version}",
        "#",
    ]
    if params.locked:
        lines += [
            "# This parameter set is locked: chain started.",
            "# Its values are fixed; a node refuses to start if they are changed.",
        ]
    else:
        lines += [
            "# This parameter set is editable until the first start of the chain",
            f"# (chainmill start {chain}); that start fills in the genesis values and locks it.",
            "# Lines read: name = value   # description (allowed range)",
        ]
    lines.append("")
    for section in SECTIONS:
        lines.append(f"# {section}")
        if section == GENERATED:
            lines.append("# Edit only if you know what you are doing; genesis values are set at first start.")
        lines.append("")
        for spec in _TABLE:
            if spec.section != section:
                continue
            left = f"{spec.name} = {format_value(spec, params[spec.name])}".rstrip()
            comment = spec.description
            if spec.type != "bool" and spec.range_text():
                comment += f" ({spec.range_text()})"
            lines.append(f"{left:<40} # {comment}")
        lines.append("")
    return "\n".join(lines)


def read_params_file(path: str | os.PathLike[str]) -> ChainParams:
    """Read and check a params.dat file; errors name the file and line.

    Comment lines, blank lines, trailing comments and spacing around ``=`` are free. Unknown
    names, duplicates, bad types and out-of-range values are refused. Parameters left out
    take their default; generated values must be present.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such parameter file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None

    values: dict[str, ParamValue] = {}
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value_text = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"{path}:{number}: expected 'name = value', got {raw.strip()!r}")
        if name not in PARAM_SPECS:
            raise ConfigError(f"{path}:{number}: unknown blockchain parameter {name!r}")
        if name in first_line:
            raise ConfigError(
                f"{path}:{number}: duplicate parameter {name!r} (first set on line {first_line[name]})"
            )
        first_line[name] = number
        try:
            values[name] = parse_value(PARAM_SPECS[name], value_text)
        except ConfigError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None

    for name, spec in PARAM_SPECS.items():
        if name in values:
            continue
        if name == "chain-description" and "chain-name" in values:
            values[name] = f"chainmill {values['chain-name']}"
        elif spec.default is not None or spec.nullable:
            values[name] = spec.default
        else:
            raise ConfigError(f"{path}: missing blockchain parameter {name!r}")
    try:
        return ChainParams(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ---------------------------------------------------------------- hash


def params_hash(params: ChainParams) -> bytes:
    """SHA-256 over a canonical encoding of every parameter but chain-params-hash and genesis-hash.

    Names are taken in sorted order; each is encoded as its UTF-8 name (u16 length), a set/unset
    flag and its canonical text (u32 length): true/false, decimal integers, fractions as integer
    millionths, lowercase hex, raw strings. Formatting, comments and line order of the file do
    not change the hash; any value change does.
    """
    digest = hashlib.sha256()
    for name in sorted(PARAM_SPECS):
        if name in _NOT_HASHED:
            continue
        spec = PARAM_SPECS[name]
        value = params[name]
        encoded_name = name.encode("utf-8")
        digest.update(struct.pack(">H", len(encoded_name)) + encoded_name)
        if value is None:
            digest.update(b"\x00")
            continue
        if spec.type == "float":
            text = str(round(float(value) * 10**_FRACTION_DIGITS))  # type: ignore[arg-type]
        else:
            text = format_value(spec, value)
        encoded = text.encode("utf-8")
        digest.update(b"\x01" + struct.pack(">I", len(encoded)) + encoded)
    return digest.digest()
