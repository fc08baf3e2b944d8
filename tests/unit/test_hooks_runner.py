"""walletnotify / walletnotifynew / blocknotify: substitution without a shell, firing rules,
timeouts, failures, concurrency and order (spec §6.3 with chainmill's §10 difference).

The hooks are real programs written to tmp_path: a Python script that appends its arguments
as one JSON line to a file, optionally after waiting for a gate file to appear.
"""

import asyncio
import json
import logging
import os
import shlex
import sys
import time

import pytest

from config.errors import ConfigError
from node.hooks import WALLET_TOKENS, HookCommand, HookRunner

HOOK_SCRIPT = """\
import json, os, sys, time
out, gate = sys.argv[1], sys.argv[2]
with open(out, "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[3:]) + "\\n")
deadline = time.monotonic() + 60
while gate != "-" and not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.01)
"""

NASTY = "a b 'c' \"d\" $(touch pwned) `touch pwned2`; rm -rf x && echo %s | cat > y"
ZEROS = "0" * 64


async def wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Hook:
    """A recording hook program in a directory; `records()` are the argument lists it got."""

    def __init__(self, directory):
        self.dir = directory
        self.script = directory / "hook.py"
        self.script.write_text("#!" + sys.executable + "\n" + HOOK_SCRIPT)
        self.script.chmod(0o755)
        self.out = directory / "calls.jsonl"
        self.gate = directory / "gate"

    def command(self, args: str, *, gated=False) -> str:
        gate = shlex.quote(str(self.gate)) if gated else "-"
        return f"{shlex.quote(str(self.script))} {shlex.quote(str(self.out))} {gate} {args}"

    def records(self):
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def hook(tmp_path):
    return Hook(tmp_path)


def wallet_event(**overrides):
    event = dict(txid="ab" * 32, first_seen=True, height=-1, blockhash=ZEROS, raw_hex="0100ff",
                 addresses=["1Addr", "1Other"], entities=["cd" * 32], chain="erpchain",
                 tx_json={"txid": "ab" * 32, "data": NASTY})
    event.update(overrides)
    return event


# --- substitution (no processes) ---------------------------------------------------------------


def test_hooks_substitution_is_per_argument_and_single_pass():
    command = HookCommand("walletnotify", "run --tx=%s '%a and %e' %c%n %x %% 100%", WALLET_TOKENS)
    argv = command.argv({"s": "t %c x", "a": "A B", "e": "", "c": "1", "n": "-1"})
    # A substituted value is not scanned again; unknown tokens and lone % stay as written.
    assert argv == ["run", "--tx=t %c x", "A B and ", "1-1", "%x", "%%", "100%"]
    assert command.tokens == {"s", "a", "e", "c", "n"}


def test_hooks_bad_command_line_is_a_config_error():
    with pytest.raises(ConfigError):
        HookRunner(walletnotify="run 'unbalanced", walletnotifynew=None, blocknotify=None)
    with pytest.raises(ConfigError):
        HookCommand("blocknotify", "   ", frozenset("s"))


# --- real programs -----------------------------------------------------------------------------


def test_hooks_values_arrive_as_single_arguments_without_shell(hook, tmp_path):
    async def main():
        runner = HookRunner(walletnotify=hook.command("%s %c %n %b %h %a %e %m %j"),
                            walletnotifynew=None, blocknotify=None)
        event = wallet_event(chain="erp chain; $(touch pwned)", addresses=[NASTY])
        await runner.wallet_event(**event)
        await wait_until(lambda: hook.records(), what="hook run")
        await runner.close()
        return event

    event = asyncio.run(main())
    (argv,) = hook.records()
    assert argv == ["ab" * 32, "1", "-1", ZEROS, "0100ff", NASTY, "cd" * 32,
                    "erp chain; $(touch pwned)",
                    json.dumps(event["tx_json"], separators=(",", ":"))]
    assert json.loads(argv[8]) == event["tx_json"]
    assert not any(p.name.startswith("pwned") for p in tmp_path.iterdir())
    assert not (tmp_path / "y").exists()


def test_hooks_empty_lists_become_empty_arguments(hook):
    async def main():
        runner = HookRunner(walletnotify=hook.command("[%a] %a %e"), walletnotifynew=None,
                            blocknotify=None)
        await runner.wallet_event(**wallet_event(addresses=[], entities=[]))
        await wait_until(lambda: hook.records(), what="hook run")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["[]", "", ""]]


def test_hooks_walletnotify_fires_on_first_sighting_and_confirmation(hook):
    async def main():
        runner = HookRunner(walletnotify=hook.command("%s %c %n %b"), walletnotifynew=None,
                            blocknotify=None, max_concurrent=1)
        await runner.wallet_event(**wallet_event(txid="t1"))
        await runner.wallet_event(**wallet_event(txid="t1", first_seen=False, height=12,
                                                 blockhash="ee" * 32))
        await wait_until(lambda: len(hook.records()) == 2, what="two runs")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["t1", "1", "-1", ZEROS], ["t1", "0", "12", "ee" * 32]]


def test_hooks_walletnotifynew_fires_only_on_first_sighting(hook):
    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=hook.command("new %s %c"),
                            blocknotify=None, max_concurrent=1)
        await runner.wallet_event(**wallet_event(txid="t1", first_seen=False, height=3))
        await runner.wallet_event(**wallet_event(txid="t2"))
        await wait_until(lambda: hook.records(), what="hook run")
        await wait_until(lambda: runner.running == 0, what="runner idle")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["new", "t2", "1"]]


def test_hooks_walletnotify_takes_precedence_over_walletnotifynew(hook):
    async def main():
        runner = HookRunner(walletnotify=hook.command("wallet %s"),
                            walletnotifynew=hook.command("new %s"),
                            blocknotify=None, max_concurrent=1)
        await runner.wallet_event(**wallet_event(txid="t1"))
        await runner.wallet_event(**wallet_event(txid="t1", first_seen=False, height=1))
        await wait_until(lambda: len(hook.records()) == 2, what="two runs")
        await wait_until(lambda: runner.running == 0, what="runner idle")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["wallet", "t1"], ["wallet", "t1"]]


def test_hooks_blocknotify_substitutes_block_hash_only(hook):
    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=hook.command("block %s %c"))
        await runner.wallet_event(**wallet_event())  # no wallet hooks configured: nothing
        await runner.block_event("ff" * 32)
        await wait_until(lambda: hook.records(), what="hook run")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["block", "ff" * 32, "%c"]]


def test_hooks_are_started_in_submission_order(hook):
    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=hook.command("%s"), max_concurrent=1)
        for i in range(6):
            await runner.block_event(f"b{i}")
        assert runner.running == 1 and runner.queued == 5  # the caller never waits
        await wait_until(lambda: len(hook.records()) == 6, what="six runs")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [[f"b{i}"] for i in range(6)]


def test_hooks_concurrency_is_bounded(hook):
    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=hook.command("%s", gated=True), max_concurrent=3)
        for i in range(5):
            await runner.block_event(f"b{i}")
        await wait_until(lambda: len(hook.records()) == 3, what="three gated runs")
        assert (runner.running, runner.queued) == (3, 2)
        hook.gate.touch()
        await wait_until(lambda: len(hook.records()) == 5, what="all runs")
        await wait_until(lambda: runner.running == 0, what="runner idle")
        await runner.close()

    asyncio.run(main())
    assert sorted(hook.records()) == [[f"b{i}"] for i in range(5)]


def test_hooks_full_queue_drops_the_oldest_waiting_event(hook, caplog):
    caplog.set_level(logging.ERROR, logger="node.hooks")

    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=hook.command("%s", gated=True),
                            max_concurrent=1, max_queued=2)
        for i in range(5):
            await runner.block_event(f"b{i}")
        await wait_until(lambda: len(hook.records()) == 1, what="first run")
        hook.gate.touch()
        await wait_until(lambda: len(hook.records()) == 3, what="remaining runs")
        await wait_until(lambda: runner.running == 0, what="runner idle")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["b0"], ["b3"], ["b4"]]
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dropped) == 2 and "dropped" in dropped[0].getMessage()


def test_hooks_hanging_hook_is_killed_and_runner_keeps_working(hook, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="node.hooks")
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\necho $$ > \"$1\"\nsleep 60\n")
    hang.chmod(0o755)
    pid_file = tmp_path / "hang.pid"

    async def main():
        hanging = HookRunner(walletnotify=None, walletnotifynew=None,
                             blocknotify=f"{shlex.quote(str(hang))} {shlex.quote(str(pid_file))}",
                             timeout=0.5, max_concurrent=1)
        started = time.monotonic()
        await hanging.block_event("b0")
        await wait_until(pid_file.exists, what="hanging hook start")
        await wait_until(lambda: hanging.running == 0, what="hanging hook killed")
        assert time.monotonic() - started < 10
        await hanging.close()
        # The same runner set-up keeps serving events after a kill.
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=hook.command("%s"), timeout=0.5, max_concurrent=1)
        await runner.block_event("b1")
        await wait_until(lambda: hook.records(), what="next hook run")
        await runner.close()

    asyncio.run(main())
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert any("killed" in r.getMessage() for r in caplog.records)
    assert hook.records() == [["b1"]]


def test_hooks_timeout_does_not_stop_later_events_of_the_same_runner(tmp_path, hook):
    slow = tmp_path / "slow.sh"
    slow.write_text(f"#!/bin/sh\n[ \"$1\" = hang ] && sleep 60\n"
                    f"exec {shlex.quote(str(hook.script))} {shlex.quote(str(hook.out))} - \"$1\"\n")
    slow.chmod(0o755)

    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=f"{shlex.quote(str(slow))} %s", timeout=0.5,
                            max_concurrent=1)
        for block in ("hang", "b1", "b2"):
            await runner.block_event(block)
        await wait_until(lambda: len(hook.records()) == 2, what="runs after the hung one")
        await runner.close()

    asyncio.run(main())
    assert hook.records() == [["b1"], ["b2"]]


def test_hooks_missing_program_and_failure_are_logged_not_raised(tmp_path, hook, caplog):
    caplog.set_level(logging.WARNING, logger="node.hooks")
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)

    async def main():
        missing = HookRunner(walletnotify=str(tmp_path / "no-such-program") + " %s",
                             walletnotifynew=None, blocknotify=str(failing) + " %s")
        await missing.wallet_event(**wallet_event())
        await missing.block_event("b0")
        await wait_until(lambda: len(caplog.records) >= 2, what="two warnings")
        await wait_until(lambda: missing.running == 0, what="runner idle")
        await missing.close()

    asyncio.run(main())
    messages = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert any("no-such-program" in m and "walletnotify" in m for m in messages)
    assert any("fail.sh" in m and "code 3" in m and "blocknotify" in m for m in messages)


def test_hooks_close_kills_running_hooks_and_refuses_new_events(tmp_path, hook):
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\necho $$ > \"$1\"\nsleep 60\n")
    hang.chmod(0o755)
    pid_file = tmp_path / "hang.pid"

    async def main():
        runner = HookRunner(walletnotify=None, walletnotifynew=None,
                            blocknotify=f"{shlex.quote(str(hang))} {shlex.quote(str(pid_file))}",
                            timeout=60, max_concurrent=1)
        await runner.block_event("b0")
        await runner.block_event("b1")  # queued; dropped by close
        await wait_until(pid_file.exists, what="hook start")
        started = time.monotonic()
        await runner.close(grace=0.2)
        assert time.monotonic() - started < 5
        assert (runner.running, runner.queued) == (0, 0)
        await runner.block_event("b2")
        assert (runner.running, runner.queued) == (0, 0)

    asyncio.run(main())
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
