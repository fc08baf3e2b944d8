"""mes.bridge.sealing: a reporter token on BLK_Res opens only with the Master token that asked."""

from __future__ import annotations

import pytest

from mes.bridge.sealing import SealError, open_reporter_token, seal_reporter_token


def test_mes_bridge_sealed_reporter_token_opens_only_for_its_master() -> None:
    sealed = seal_reporter_token("master-A", "reporter-secret-1")
    assert "reporter-secret-1" not in sealed
    assert open_reporter_token("master-A", sealed) == "reporter-secret-1"
    for master in ("master-B", "", "master-A "):
        with pytest.raises(SealError):
            open_reporter_token(master, sealed)
    altered = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    for bad in (altered, "not sealed at all", "\u00e9t\u00e9"):
        with pytest.raises(SealError):
            open_reporter_token("master-A", bad)
    assert seal_reporter_token("master-A", "reporter-secret-1") != sealed  # fresh IV each time
