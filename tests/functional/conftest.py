"""Collection and fixtures of the functional suite.

Besides pytest's own `test_*.py`, scripts named `<area>_<subject>.py` (Bitcoin Core's naming:
`trigger_replication.py`, `p2p_ban.py`) are collected; helper modules (`framework.py`,
`*_support.py`) are not. Each test gets a `harness` with its own temporary directory. The
directory (data directories, node output, hook records) is removed when the test passes
and kept when it fails; its path and the random seed then appear in the failure report.
Set CHAINMILL_KEEP_TMP=1 to keep it always.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from framework import Harness

log = logging.getLogger("functional")

HERE = Path(__file__).resolve().parent
SCRIPT_NAME = re.compile(r"[a-z][a-z0-9]*_[a-z0-9_]+\.py")
NOT_SCRIPTS = frozenset({"conftest.py", "framework.py"})


def is_functional_script(path: Path) -> bool:
    """An `<area>_<subject>.py` test script of this directory that pytest would not collect
    by its default patterns (test_*.py, *_test.py)."""
    name = path.name
    return (path.parent == HERE and SCRIPT_NAME.fullmatch(name) is not None
            and name not in NOT_SCRIPTS and not name.endswith("_support.py")
            and not name.startswith("test_") and not name.endswith("_test.py"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    # A file named on the command line is collected by pytest's own Python plugin already.
    if is_functional_script(file_path.resolve()) and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_chainmill_report_{report.when}", report)
    harness = getattr(item, "_chainmill_harness", None)
    if report.failed and harness is not None:
        report.sections.append((
            "chainmill functional harness",
            f"test directory kept: {harness.base_dir}\n"
            f"random seed: {harness.seed} (CHAINMILL_TEST_SEED={harness.seed} repeats it)"))


def _seed() -> int:
    env = os.environ.get("CHAINMILL_TEST_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**32)


@pytest.fixture
def harness(request: pytest.FixtureRequest, free_port_factory):
    base = Path(tempfile.mkdtemp(prefix=f"chainmill_{request.node.name[:40]}_"))
    h = Harness(base, free_port_factory, _seed())
    request.node._chainmill_harness = h
    log.info("test directory %s, random seed %d", base, h.seed)
    try:
        yield h
    finally:
        shutdown_error = None
        try:
            h.shutdown()
        except AssertionError as e:
            shutdown_error = e
        failed = shutdown_error is not None or any(
            getattr(getattr(request.node, f"_chainmill_report_{when}", None), "failed", False)
            for when in ("setup", "call"))
        if failed or os.environ.get("CHAINMILL_KEEP_TMP"):
            log.warning("keeping test directory %s (random seed %d)", base, h.seed)
        else:
            shutil.rmtree(base, ignore_errors=True)
        if shutdown_error is not None:
            raise shutdown_error


@pytest.fixture
def consoles() -> Iterator[list]:
    """Console processes a test starts (append them); each is stopped after the test."""
    started: list = []
    yield started
    for console in started:
        console.stop()
