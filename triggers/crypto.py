"""Private messages (spec 1.9): RSA key pairs, the AES-256-CBC + HMAC-SHA256 envelope, key wrap.

Pure functions over bytes; reading key files is the only I/O, and it is explicit. The
password is 64 random bytes: the first 32 are the AES key, the last 32 the HMAC key. The tag
covers a fixed label, the IV and the ciphertext (encrypt-then-MAC), and is checked in constant
time before anything is decrypted, so a tampered envelope never reaches the padding or the
XML parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from triggers.errors import ConfigurationInvalid, DecryptionFailed

__all__ = [
    "CIPHER",
    "MAC",
    "WRAP_ALG",
    "MIN_RSA_BITS",
    "KeyPair",
    "generate_keypair",
    "write_keypair",
    "load_private_key",
    "load_public_key",
    "check_keypair",
    "fingerprint",
    "new_password",
    "seal",
    "open_envelope",
    "is_envelope",
    "wrap_password",
    "unwrap_password",
    "access_entry",
    "parse_access_entry",
]

CIPHER = "aes-256-cbc"
MAC = "hmac-sha256"
WRAP_ALG = "RSA-OAEP-SHA256"
MIN_RSA_BITS = 2048
_TAG_LABEL = b"chainmill-private-v1"
_PASSWORD_BYTES = 64
_OAEP = OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """Paths of a written key pair and the public key's PEM text."""

    private_path: Path
    public_path: Path
    public_pem: str


def generate_keypair(bits: int = MIN_RSA_BITS) -> rsa.RSAPrivateKey:
    """Generate an RSA private key of `bits` bits (at least 2048)."""
    if bits < MIN_RSA_BITS:
        raise ConfigurationInvalid(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def write_keypair(
    directory: Path,
    key: rsa.RSAPrivateKey,
    private_name: str = "private_key.pem",
    public_name: str = "public_key.pub",
) -> KeyPair:
    """Write `key` as PKCS#8 PEM (mode 0600, created that way) and its public key as PEM.

    Refuses to overwrite an existing private key: a lost private key makes every message
    wrapped for it unreadable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / private_name
    public_path = directory / public_name
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationInvalid(f"private key {private_path} already exists") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public_pem)
    return KeyPair(private_path, public_path, public_pem.decode("ascii"))


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Read an RSA private key from a PEM file."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationInvalid(f"cannot read private key {path}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationInvalid(f"{path} is not an RSA private key")
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Parse an RSA public key from PEM text; refuses keys shorter than 2048 bits."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationInvalid(f"not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationInvalid("public key is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise ConfigurationInvalid(f"RSA public key has {key.key_size} bits, fewer than 2048")
    return key


def check_keypair(private_path: Path, public_path: Path) -> None:
    """Raise ConfigurationInvalid unless the two files form one RSA key pair of >= 2048 bits."""
    private = load_private_key(private_path)
    try:
        public = load_public_key(Path(public_path).read_bytes())
    except OSError as exc:
        raise ConfigurationInvalid(f"cannot read public key {public_path}: {exc}") from None
    if private.key_size < MIN_RSA_BITS:
        raise ConfigurationInvalid(f"RSA key has {private.key_size} bits, fewer than 2048")
    if private.public_key().public_numbers() != public.public_numbers():
        raise ConfigurationInvalid(f"{private_path} and {public_path} are not one key pair")


def fingerprint(public_key: rsa.RSAPublicKey) -> str:
    """Hex SHA-256 of the public key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def new_password() -> bytes:
    """A fresh random 64-byte message password (AES key ‖ HMAC key)."""
    return os.urandom(_PASSWORD_BYTES)


def _tag(mac_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    return hmac.new(mac_key, _TAG_LABEL + iv + ciphertext, hashlib.sha256).digest()


def seal(plaintext: bytes, password: bytes) -> bytes:
    """Encrypt `plaintext` into the private envelope JSON (UTF-8 bytes)."""
    if len(password) != _PASSWORD_BYTES:
        raise ValueError("password must be 64 bytes")
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(password[:32]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    envelope = {
        "chainmill": "private",
        "v": 1,
        "cipher": CIPHER,
        "mac": MAC,
        "iv": base64.b64encode(iv).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
        "tag": base64.b64encode(_tag(password[32:], iv, ciphertext)).decode("ascii"),
    }
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


def is_envelope(data: bytes) -> bool:
    """True when `data` looks like a private envelope (JSON object with chainmill=private)."""
    head = data.lstrip()[:1]
    if head != b"{":
        return False
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("chainmill") == "private"


def _b64(obj: dict, field: str, size: int | None = None) -> bytes:
    value = obj.get(field)
    if not isinstance(value, str):
        raise DecryptionFailed(f"envelope field {field!r} is missing")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionFailed(f"envelope field {field!r} is not base64") from None
    if size is not None and len(raw) != size:
        raise DecryptionFailed(f"envelope field {field!r} has the wrong length")
    return raw


def open_envelope(envelope: bytes, password: bytes) -> bytes:
    """Verify the tag and decrypt a private envelope; raise DecryptionFailed on any mismatch."""
    try:
        obj = json.loads(envelope)
    except ValueError:
        raise DecryptionFailed("envelope is not JSON") from None
    if not isinstance(obj, dict) or obj.get("chainmill") != "private" or obj.get("v") != 1:
        raise DecryptionFailed("not a version-1 private envelope")
    if obj.get("cipher") != CIPHER or obj.get("mac") != MAC:
        raise DecryptionFailed("envelope uses an unsupported cipher or MAC")
    if len(password) != _PASSWORD_BYTES:
        raise DecryptionFailed("password has the wrong length")
    iv = _b64(obj, "iv", 16)
    ciphertext = _b64(obj, "ciphertext")
    tag = _b64(obj, "tag", 32)
    if not ciphertext or len(ciphertext) % 16:
        raise DecryptionFailed("ciphertext length is not a multiple of the block size")
    if not hmac.compare_digest(tag, _tag(password[32:], iv, ciphertext)):
        raise DecryptionFailed("authentication tag does not verify: the item was tampered with")
    decryptor = Cipher(algorithms.AES(password[:32]), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed("bad padding after a valid tag") from None


def wrap_password(public_key: rsa.RSAPublicKey, password: bytes) -> bytes:
    """RSA-OAEP (SHA-256, MGF1-SHA-256) encryption of the password for one reader."""
    return public_key.encrypt(password, _OAEP)


def unwrap_password(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Reverse of wrap_password; raise DecryptionFailed when the key does not fit."""
    try:
        password = private_key.decrypt(wrapped, _OAEP)
    except ValueError:
        raise DecryptionFailed("wrapped key does not decrypt with this private key") from None
    if len(password) != _PASSWORD_BYTES:
        raise DecryptionFailed("unwrapped password has the wrong length")
    return password


def access_entry(txid: str, address: str, public_key: rsa.RSAPublicKey, password: bytes) -> dict:
    """The access-stream JSON object granting `address` the password of item `txid`."""
    return {
        "txid": txid,
        "address": address,
        "key_fingerprint": fingerprint(public_key),
        "alg": WRAP_ALG,
        "wrapped_key": base64.b64encode(wrap_password(public_key, password)).decode("ascii"),
    }


def parse_access_entry(data: bytes) -> dict:
    """Parse and shape-check an access entry; raise DecryptionFailed when malformed."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise DecryptionFailed("access entry is not JSON") from None
    if not isinstance(obj, dict):
        raise DecryptionFailed("access entry is not a JSON object")
    for field in ("txid", "address", "key_fingerprint", "alg", "wrapped_key"):
        if not isinstance(obj.get(field), str):
            raise DecryptionFailed(f"access entry lacks {field!r}")
    if obj["alg"] != WRAP_ALG:
        raise DecryptionFailed(f"access entry uses unsupported algorithm {obj['alg']!r}")
    return obj
