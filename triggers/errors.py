"""Named errors of the trigger subsystem; each is documented once here."""

from config.errors import ChainmillError

__all__ = [
    "TriggerError",
    "ConfigurationInvalid",
    "DocumentRejected",
    "DocumentInvalid",
    "DecryptionFailed",
    "NotARecipient",
    "RecipientUnavailable",
    "ApplyFailed",
    "HookFailed",
    "RowVanished",
    "KeyRangeExhausted",
]


class TriggerError(ChainmillError):
    """Root of the trigger subsystem's errors."""


class ConfigurationInvalid(TriggerError):
    """A chain, stream, node, trigger or related-table entry breaks a validation rule."""


class DocumentRejected(TriggerError):
    """Received XML is hostile or out of bounds: DTD, entity, too big, too deep, bad name."""


class DocumentInvalid(TriggerError):
    """An XML document is well formed but does not follow the document grammar (spec 1.7)."""


class DecryptionFailed(TriggerError):
    """A private item's key could not be unwrapped, its tag did not verify, or it is malformed.

    Always a security event: the item is never applied.
    """


class NotARecipient(TriggerError):
    """No access entry for this node exists (yet) for a private item."""


class RecipientUnavailable(TriggerError):
    """A recipient of a private message has no usable address or public key; nothing is sent."""


class ApplyFailed(TriggerError):
    """A received document cannot be applied to the local database (unknown table, column, ...)."""


class HookFailed(TriggerError):
    """A per-table hook raised; the send or the receive it belongs to fails as a whole."""


class RowVanished(TriggerError):
    """The root row of a captured insert/update no longer exists when the document is built."""


class KeyRangeExhausted(TriggerError):
    """The 26-digit counter of a participant's key range would overflow."""
