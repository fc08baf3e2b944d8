"""walletnotify / walletnotifynew / blocknotify: run configured programs on chain events.

Spec §6.3, with chainmill's difference (§10): the command line is split into arguments once
(shell quoting rules), each `%x` token is replaced inside its argument, and the program runs
without a shell. Values are therefore never quoted, and item data can never become shell
syntax. Hooks run in the background, a few at a time, in submission order; a hook can fail,
hang or be missing without ever affecting the node.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from config.errors import ConfigError

log = logging.getLogger(__name__)

WALLET_TOKENS = frozenset("scnbhaemj")
"""Tokens of walletnotify / walletnotifynew (`%s %c %n %b %h %a %e %m %j`)."""
BLOCK_TOKENS = frozenset("s")
"""Tokens of blocknotify (`%s`, the block hash)."""

_TOKEN = re.compile(r"%([A-Za-z])")
_REAP_TIMEOUT = 5.0


class HookCommand:
    """A hook command line, split once; `argv(values)` substitutes tokens in one pass.

    A substituted value is never scanned again, so data containing `%s` stays as it is.
    `%` followed by anything that is not a known token is left alone.
    """

    __slots__ = ("name", "line", "_argv", "tokens")

    def __init__(self, name: str, line: str, known: frozenset[str]) -> None:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"{name}: cannot split command line: {exc}") from exc
        if not argv:
            raise ConfigError(f"{name}: empty command line")
        self.name = name
        self.line = line
        self._argv = argv
        self.tokens = frozenset(
            m.group(1) for arg in argv for m in _TOKEN.finditer(arg) if m.group(1) in known
        )
        """The tokens this command uses, so unused values (e.g. %j) are never computed."""

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The arguments with every known `%x` replaced by values[x]."""

        def replace(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            return match.group(0) if value is None else value

        return [_TOKEN.sub(replace, arg) if "%" in arg else arg for arg in self._argv]


def wallet_values(
    tokens: frozenset[str],
    *,
    txid: str,
    first_seen: bool,
    height: int,
    blockhash: str,
    raw_hex: str,
    addresses: list[str],
    entities: list[str],
    chain: str,
    tx_json: Any,
) -> dict[str, str]:
    """Substitution values of a wallet event, computed only for the tokens used."""
    values = {
        "s": txid,
        "c": "1" if first_seen else "0",
        "n": str(height),
        "b": blockhash,
        "h": raw_hex,
        "a": ",".join(addresses),
        "e": ",".join(entities),
        "m": chain,
    }
    if "j" in tokens:
        values["j"] = orjson.dumps(tx_json, default=str).decode()
    return values


class HookRunner:
    """Runs hook commands in the background: at most `max_concurrent` at once, FIFO.

    Events beyond that wait in a queue of `max_queued`; when it is full the oldest waiting
    event is dropped (logged as an error). Each run is killed after `timeout` seconds.
    The event methods return as soon as the run is queued; they never raise for hook failures.
    """

    def __init__(
        self,
        *,
        walletnotify: str | None,
        walletnotifynew: str | None,
        blocknotify: str | None,
        timeout: float = 30,
        max_concurrent: int = 4,
        max_queued: int = 10_000,
    ) -> None:
        self._walletnotify = _command("walletnotify", walletnotify, WALLET_TOKENS)
        self._walletnotifynew = _command("walletnotifynew", walletnotifynew, WALLET_TOKENS)
        self._blocknotify = _command("blocknotify", blocknotify, BLOCK_TOKENS)
        self._timeout = timeout
        self._max_concurrent = max(1, max_concurrent)
        self._max_queued = max(1, max_queued)
        self._queue: collections.deque[tuple[str, list[str]]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._closed = False
        self.observe: Callable[[str, str | None], None] | None = None
        """Called when a run ends: (hook name, None or why it failed); set for /metrics."""

    async def wallet_event(
        self,
        *,
        txid: str,
        first_seen: bool,
        height: int,
        blockhash: str,
        raw_hex: str,
        addresses: list[str],
        entities: list[str],
        chain: str,
        tx_json: Any,
    ) -> None:
        """A relevant transaction was first seen (first_seen) or later confirmed.

        walletnotify runs for both events; walletnotifynew only for first sightings, and
        only when walletnotify is not set. For an unconfirmed transaction pass height -1 and
        64 zeros as blockhash (spec §9 point 10).
        """
        command = self._walletnotify
        if command is None and first_seen:
            command = self._walletnotifynew
        if command is None:
            return
        values = wallet_values(
            command.tokens,
            txid=txid,
            first_seen=first_seen,
            height=height,
            blockhash=blockhash,
            raw_hex=raw_hex,
            addresses=addresses,
            entities=entities,
            chain=chain,
            tx_json=tx_json,
        )
        self._submit(command.name, command.argv(values))

    async def block_event(self, blockhash: str) -> None:
        """The best block changed (including reorgs)."""
        if self._blocknotify is not None:
            self._submit("blocknotify", self._blocknotify.argv({"s": blockhash}))

    @property
    def running(self) -> int:
        """Hooks running now."""
        return len(self._tasks)

    @property
    def queued(self) -> int:
        """Hooks waiting for a free slot."""
        return len(self._queue)

    def _submit(self, name: str, argv: list[str]) -> None:
        if self._closed:
            log.debug("%s not run: hooks are shut down", name)
            return
        if len(self._queue) >= self._max_queued:
            dropped, dropped_argv = self._queue.popleft()
            log.error("hook queue full (%d waiting): dropped the oldest %s run of %s",
                      self._max_queued, dropped, dropped_argv[0])
        self._queue.append((name, argv))
        self._start_queued()

    def _start_queued(self) -> None:
        # Tasks are created in queue order and asyncio starts tasks in creation order, so the
        # programs are started in the order the events were submitted.
        while self._queue and len(self._tasks) < self._max_concurrent and not self._closed:
            name, argv = self._queue.popleft()
            task = asyncio.get_running_loop().create_task(self._run(name, argv))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._start_queued()

    async def _run(self, name: str, argv: list[str]) -> None:
        program = argv[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                # Its own process group, so a timeout also kills what a script started.
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot run %s: %s", name, program, exc)
            self._observe(name, "cannot-run")
            return
        self._procs.add(proc)
        try:
            try:
                code = await asyncio.wait_for(proc.wait(), self._timeout)
            except TimeoutError:
                log.warning("%s: %s still running after %gs, killed", name, program,
                            self._timeout)
                _kill(proc)
                await proc.wait()
                self._observe(name, "timeout")
                return
            if code != 0:
                log.warning("%s: %s exited with code %d", name, program, code)
            self._observe(name, None if code == 0 else "exit-code")
        except asyncio.CancelledError:
            _kill(proc)
            raise
        except Exception:  # the outermost level of a hook: never let it reach the node
            log.exception("%s: error while running %s", name, program)
            _kill(proc)
            self._observe(name, "error")
        finally:
            self._procs.discard(proc)

    def _observe(self, name: str, failure: str | None) -> None:
        if self.observe is not None:
            self.observe(name, failure)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting events, drop queued ones, give running hooks `grace` seconds, kill."""
        self._closed = True
        if self._queue:
            log.info("hooks shut down: %d queued runs dropped", len(self._queue))
            self._queue.clear()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if not pending:
            return
        for proc in list(self._procs):
            _kill(proc)
        # SIGKILL cannot be ignored: the runs end (and reap their process) almost at once.
        _, pending = await asyncio.wait(pending, timeout=_REAP_TIMEOUT)
        for task in pending:
            task.cancel()


def _command(name: str, line: str | None, known: frozenset[str]) -> HookCommand | None:
    if line is None or not line.strip():
        return None
    return HookCommand(name, line, known)


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill a hook's process group (the hook and anything it started)."""
    if proc.returncode is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass
