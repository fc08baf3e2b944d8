"""The receiver's walk lock: one walk at a time per chain directory; a notified process that
finds another one already queued behind the running walk leaves at once."""

from __future__ import annotations

import threading
from pathlib import Path

from triggers import cli, receive_command
from triggers.locks import QUEUE_FILE, walk_lock


def _queue_taken(directory: Path) -> bool:
    """Whether some open file holds a flock on the queue file, read from /proc/locks so the
    probe never takes the slot itself (a probe that took it, even for an instant, would make
    the second walk find the slot busy and leave)."""
    inode = (directory / QUEUE_FILE).stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # a waiter, or another kind of lock
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def test_a_second_notification_queues_and_a_third_leaves(tmp_path: Path) -> None:
    running, release, queued_done = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def walk(name: str, hold: threading.Event | None) -> None:
        with walk_lock(tmp_path, leave_if_queued=True) as mine:
            assert mine
            order.append(name)
            if hold is not None:
                running.set()
                hold.wait(10)

    first = threading.Thread(target=walk, args=("first", release))
    first.start()
    assert running.wait(10)
    second = threading.Thread(target=lambda: (walk("second", None), queued_done.set()))
    second.start()
    # Wait until the second one holds the queue slot (it creates the file first).
    for _ in range(1000):
        if (tmp_path / QUEUE_FILE).exists() and _queue_taken(tmp_path):
            break
        threading.Event().wait(0.01)
    else:
        raise AssertionError("the second walk never queued")
    # A third one has nothing to add and leaves at once.
    with walk_lock(tmp_path, leave_if_queued=True) as mine:
        assert not mine
    assert order == ["first"]
    release.set()
    first.join(10)
    assert queued_done.wait(10)
    second.join(10)
    assert order == ["first", "second"]
    with walk_lock(tmp_path, leave_if_queued=True) as mine:  # nobody left: walk
        assert mine


def test_a_follower_waits_for_its_turn(tmp_path: Path) -> None:
    inside = threading.Event()
    release = threading.Event()
    got_in: list[bool] = []

    def holder() -> None:
        with walk_lock(tmp_path):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(10)
    def follower() -> None:
        with walk_lock(tmp_path) as mine:
            got_in.append(mine)

    waiter = threading.Thread(target=follower)
    waiter.start()
    waiter.join(0.3)
    assert got_in == []  # still waiting
    release.set()
    t.join(10)
    waiter.join(10)
    assert got_in == [True]


def test_receive_takes_a_negative_height_as_unconfirmed(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    receive_command.add_parser(sub)
    args = parser.parse_args(["receive", "chain1", "ab" * 32, "-1", "--datadir", str(tmp_path)])
    assert (args.chain, args.height, args.datadir) == ("chain1", "-1", str(tmp_path))


def test_sqlite_engines_of_the_commands_enforce_foreign_keys(tmp_path: Path) -> None:
    import argparse

    from sqlalchemy import text

    args = argparse.Namespace(db=f"sqlite:///{tmp_path / 'x.db'}", datadir=str(tmp_path),
                              hooks=None)
    engine, _ = cli.open_engine(args)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
