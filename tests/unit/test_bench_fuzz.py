"""The README's fuzz command runs, reports executions and writes its results file.

A seconds-long smoke run of two targets (the real runs are minutes long and not in CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_fuzz(tmp_path: Path, targets: list[str], minutes: str,
             timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m bench.fuzz` on `targets` with seed 1: the run, and its results file after
    checking that it succeeded and reported the targets asked for, in order."""
    out = tmp_path / "fuzz.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--minutes", minutes, "--targets",
         ",".join(targets), "--seed", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(out.read_text())
    assert [t["target"] for t in results["targets"]] == targets
    return run, results


def test_bench_fuzz_command_runs_targets_and_writes_results(tmp_path):
    run, results = run_fuzz(tmp_path, ["tx", "xml"], "0.02")
    for t in results["targets"]:
        assert t["executions"] > 0 and t["crashes"] == 0
    assert "executions" in run.stdout


def test_bench_fuzz_handshake_targets_speak_the_current_p2p_protocol(tmp_path):
    """The decoder/Noise/record target and the live one run clean: every live execution ends
    with a correct Noise key exchange and signed handshake that the real node accepts."""
    _, results = run_fuzz(tmp_path, ["handshake", "handshake-live"], "0.01", timeout=180)
    for t in results["targets"]:
        assert t["executions"] > 0 and t["crashes"] == 0, t


def test_bench_fuzz_compact_block_targets_run_clean(tmp_path):
    """The CMPCTBLOCK, GETBLOCKTXN and BLOCKTXN decoder targets (protocol 3) run clean."""
    _, results = run_fuzz(tmp_path, ["cmpctblock", "getblocktxn", "blocktxn"], "0.01")
    for t in results["targets"]:
        assert t["executions"] > 0 and t["crashes"] == 0, t


def test_bench_fuzz_compact_block_checks_hold_on_their_seeds():
    """Each seed meets its target's contract, and so do its truncated and extended forms
    and a BLOCKTXN under a limit its transactions exceed (all refused with DecodeError)."""
    from bench.fuzz import corpus, targets

    for check, seeds in ((targets.check_cmpctblock, corpus.compact_seeds()),
                         (targets.check_getblocktxn, corpus.getblocktxn_seeds())):
        for seed in seeds:
            check(seed)
            check(seed[:-1])  # truncated: refused with DecodeError
            check(seed + b"\0")  # trailing byte: refused with DecodeError
    for seed in corpus.blocktxn_seeds():
        targets.check_blocktxn((seed, 1 << 20))
        targets.check_blocktxn((seed, 0))  # every transaction over the limit: refused
