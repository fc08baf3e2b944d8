"""The errors erp/ raises on purpose; all derive from ChainmillError (one line for a user)."""

from __future__ import annotations

from config.errors import ChainmillError

__all__ = ["ErpError", "ActionRefused", "NotFound"]


class ErpError(ChainmillError):
    """Root of the ERP adapter's deliberate errors (bad configuration, bad arguments)."""


class ActionRefused(ErpError):
    """A business action breaks a rule of spec 2.1-2.3. In the projection it is recorded as
    rejected with this reason; before publishing it means nothing was published."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(ErpError):
    """The object asked for does not exist in the projection."""
