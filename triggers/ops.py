"""What an operator looks at and fixes: per-trigger counts, outbox and inbox listings, retries.

Plain queries over the subsystem's own tables; the CLI (`chainmill triggers status|outbox|
inbox|retry`) prints them. Nothing here talks to a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from triggers import schema
from triggers.errors import ConfigurationInvalid

__all__ = [
    "TriggerStatus",
    "status",
    "inbox_summary",
    "outbox_rows",
    "inbox_rows",
    "retry_outbox",
    "retry_inbox",
    "OUTBOX_STATUSES",
    "INBOX_STATUSES",
]

OUTBOX_STATUSES = ("PENDING", "SENT", "FAILED")
INBOX_STATUSES = ("APPLIED", "FAILED", "DEFERRED", "NOT_FOR_ME", "IGNORED", "SUPERSEDED",
                  "REJECTED")
RETRYABLE_INBOX = ("FAILED", "REJECTED", "DEFERRED", "NOT_FOR_ME")


@dataclass(slots=True)
class TriggerStatus:
    """One trigger's outbox counts and newest error."""

    trigger_id: int
    table_id: str
    chain_id: str
    stream_id: str
    counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


def status(engine: Engine) -> list[TriggerStatus]:
    """Per trigger: outbox rows by status and the newest error of a row still not sent."""
    out, trg = schema.outbox, schema.trigger
    with engine.connect() as conn:
        found = {
            r.trigger_id: TriggerStatus(r.trigger_id, r.table_id, r.chain_id, r.stream_id)
            for r in conn.execute(select(trg).order_by(trg.c.trigger_id))
        }
        for trigger_id, state, count in conn.execute(
            select(out.c.trigger_id, out.c.status, func.count()).group_by(out.c.trigger_id,
                                                                         out.c.status)
        ):
            entry = found.get(trigger_id)
            if entry is None:
                entry = found[trigger_id] = TriggerStatus(trigger_id, "?", "?", "?")
            entry.counts[state] = int(count)
        for entry in found.values():
            entry.last_error = conn.execute(
                select(out.c.last_error)
                .where(out.c.trigger_id == entry.trigger_id, out.c.last_error.is_not(None),
                       out.c.status != "SENT")
                .order_by(out.c.sequence.desc()).limit(1)
            ).scalar()
    return list(found.values())


def inbox_summary(engine: Engine) -> dict[str, Any]:
    """Per chain: inbox rows by status, newest error, and the receiver cursor of each stream."""
    inbox, cursor = schema.inbox, schema.receiver_cursor
    chains: dict[str, Any] = {}
    with engine.connect() as conn:
        for chain_id, state, count in conn.execute(
            select(inbox.c.chain_id, inbox.c.status, func.count())
            .group_by(inbox.c.chain_id, inbox.c.status)
        ):
            chains.setdefault(chain_id, {"counts": {}, "cursors": {}, "last_error": None})
            chains[chain_id]["counts"][state] = int(count)
        for row in conn.execute(select(cursor).order_by(cursor.c.chain_id, cursor.c.stream_id)):
            chains.setdefault(row.chain_id, {"counts": {}, "cursors": {}, "last_error": None})
            chains[row.chain_id]["cursors"][row.stream_id] = int(row.position)
        for chain_id, entry in chains.items():
            entry["last_error"] = conn.execute(
                select(inbox.c.error)
                .where(inbox.c.chain_id == chain_id, inbox.c.status == "FAILED")
                .order_by(inbox.c.received_at.desc()).limit(1)
            ).scalar()
    return chains


def _statuses(given: str | None, allowed: Sequence[str]) -> list[str] | None:
    if not given:
        return None
    wanted = [s.strip().upper() for s in given.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in allowed]
    if unknown:
        raise ConfigurationInvalid(
            f"unknown status {', '.join(unknown)}: use one of {', '.join(allowed)}")
    return wanted


def outbox_rows(engine: Engine, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest outbox rows (optionally of the given comma-separated statuses), newest first."""
    out = schema.outbox
    query = select(out.c.sequence, out.c.trigger_id, out.c.table_id, out.c.operation,
                   out.c.pkey, out.c.status, out.c.attempts, out.c.message_id, out.c.txid,
                   out.c.last_error, out.c.created_at)
    wanted = _statuses(state, OUTBOX_STATUSES)
    if wanted:
        query = query.where(out.c.status.in_(wanted))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(out.c.sequence.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def inbox_rows(engine: Engine, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest inbox rows (optionally of the given statuses), newest first."""
    inbox = schema.inbox
    query = select(inbox.c.chain_id, inbox.c.stream_id, inbox.c.txid, inbox.c.item_index,
                   inbox.c.message_id, inbox.c.status, inbox.c.attempts, inbox.c.block_height,
                   inbox.c.block_index, inbox.c.root_element, inbox.c.error, inbox.c.received_at)
    wanted = _statuses(state, INBOX_STATUSES)
    if wanted:
        query = query.where(inbox.c.status.in_(wanted))
    with engine.connect() as conn:
        rows = conn.execute(
            query.order_by(inbox.c.received_at.desc(), inbox.c.txid, inbox.c.item_index)
            .limit(limit)
        ).mappings().all()
    return [dict(r) for r in rows]


def retry_outbox(engine: Engine, sequences: Sequence[int] | None) -> int:
    """FAILED outbox rows (all, or the given sequence numbers) back to PENDING, due now."""
    out = schema.outbox
    stmt = update(out).where(out.c.status == "FAILED")
    if sequences is not None:
        stmt = stmt.where(out.c.sequence.in_(list(sequences)))
    with engine.begin() as conn:
        return int(conn.execute(stmt.values(status="PENDING", next_attempt_at=None)).rowcount or 0)


def retry_inbox(engine: Engine, message_ids: Sequence[str] | None) -> int:
    """Inbox rows that did not apply (FAILED, REJECTED, DEFERRED, NOT_FOR_ME; all FAILED, or
    the given event ids) made due again: the next receiver pass re-runs them."""
    inbox = schema.inbox
    if message_ids is None:
        stmt = update(inbox).where(inbox.c.status == "FAILED")
    else:
        stmt = update(inbox).where(inbox.c.message_id.in_(list(message_ids)),
                                   inbox.c.status.in_(RETRYABLE_INBOX))
    with engine.begin() as conn:
        return int(conn.execute(stmt.values(status="FAILED", next_attempt_at=None)).rowcount or 0)
