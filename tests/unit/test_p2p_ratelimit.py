"""node/p2p/network.RateLimitedLog: a flood of bad connections writes one line per interval."""

import logging

from node.p2p.network import RateLimitedLog


def test_p2p_ratelimit_one_line_per_interval_then_the_count(caplog):
    now = [100.0]
    logger = logging.getLogger("test.p2p.ratelimit")
    limited = RateLimitedLog(logger, 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.p2p.ratelimit"):
        for i in range(1000):
            limited.warning("peer %d dropped", i)
        assert [r.getMessage() for r in caplog.records] == ["peer 0 dropped"]
        now[0] += 10.0
        limited.warning("peer %d dropped", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "peer 0 dropped", "peer 1000 dropped (999 similar lines suppressed)"]
    assert limited.suppressed == 0
