"""A reporter token on BLK_Res, readable only by the MES that asked for it.

BLK_Res is read by every MES client (each filters by ``interaction_id``), and the bridge
keeps each answer for the 10-minute duplicate window. A reporter token in clear there would
let any reader of the topic, or of the bridge's database, report for that unit. So the
``token`` of an ``ensure_reporter`` answer is sealed (Fernet: AES-128-CBC + HMAC-SHA256) with
a key derived from the Master token the request presented: the asking MES holds that token,
the bridge saw it in the request and keeps only its hash, and nobody else has it.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from config.errors import ChainmillError

__all__ = ["SealError", "seal_reporter_token", "open_reporter_token"]

_CONTEXT = b"chainmill mes: reporter token sealed for the Master token\x00"


class SealError(ChainmillError):
    """A sealed token that this Master token cannot open (not for us, or altered)."""


def _fernet(master_token: str) -> Fernet:
    digest = hashlib.sha256(_CONTEXT + master_token.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal_reporter_token(master_token: str, reporter_token: str) -> str:
    """What the bridge puts in the answer's ``token`` field."""
    return _fernet(master_token).encrypt(reporter_token.encode("utf-8")).decode("ascii")


def open_reporter_token(master_token: str, sealed: str) -> str:
    """The reporter token of an ``ensure_reporter`` answer, for the MES that asked."""
    try:
        return _fernet(master_token).decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        raise SealError("the reporter token in the bridge's answer is not sealed for this "
                        "Master token") from None
