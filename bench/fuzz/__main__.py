"""`python -m bench.fuzz [--minutes N] [--targets a,b] [--out FILE]`: run the fuzz targets."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

from bench.fuzz.targets import Target, all_targets

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "bench" / "results" / "fuzz.json"
_FILE = re.compile(r'File "([^"]+)"')


def portable(trace: str) -> str:
    """A traceback without this machine's paths: repository files relative, others by name."""
    def short(match: re.Match) -> str:
        path = Path(match.group(1))
        try:
            return f'File "{path.relative_to(ROOT)}"'
        except ValueError:
            return f'File "{path.name}"'

    return _FILE.sub(short, trace)


def _body(target: Target, last: dict[str, Any], deadline: float,
          counter: list[int]) -> Any:
    """The function hypothesis calls with each input: run the check, remember a crash."""

    def body(value: Any) -> None:
        if time.monotonic() > deadline:
            return  # out of budget: let the batch finish without running more inputs
        counter[0] += 1
        try:
            target.check(value)
        except Exception as e:  # noqa: BLE001 - a fuzz harness records every crash
            last["input"] = value
            last["error"] = f"{type(e).__name__}: {e}"
            last["trace"] = portable(traceback.format_exc(limit=-4))
            raise

    return body


def run_target(target: Target, seconds: float, base_seed: int) -> dict[str, Any]:
    """Run `target` for `seconds` of wall time in hypothesis batches; record distinct crashes."""
    counter = [0]
    crashes: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + seconds
    cpu0, wall0 = time.process_time(), time.monotonic()
    batch = 0
    while time.monotonic() < deadline:
        batch += 1
        last: dict[str, Any] = {}
        body = _body(target, last, deadline, counter)
        test = settings(max_examples=300, database=None, deadline=None, print_blob=False,
                        suppress_health_check=list(HealthCheck))(given(target.strategy)(body))
        try:
            seed(base_seed + batch)(test)()
        except Exception as e:  # noqa: BLE001 - the minimal failing input is in `last`
            key = last.get("error", f"harness: {type(e).__name__}: {e}").split("\n")[0][:160]
            if key not in crashes:
                crashes[key] = {"error": last.get("error", ""),
                                "input": repr(last.get("input"))[:2000],
                                "trace": last.get("trace", "")}
                print(f"  {target.name}: CRASH {key}", flush=True)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    executions = counter[0]
    return {"target": target.name, "what": target.what, "executions": executions,
            "crashes": len(crashes), "crash_details": list(crashes.values()),
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "executions_per_second": round(executions / wall) if wall else 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    ap.add_argument("--minutes", type=float, default=1.0, help="time budget per target")
    ap.add_argument("--targets", default="", help="comma-separated names (default: all)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # the targets log refused input; crashes are reported here
    names = [n for n in args.targets.split(",") if n]
    targets = all_targets()
    chosen = [t for t in targets if not names or t.name in names]
    unknown = set(names) - {t.name for t in targets}
    if unknown:
        print(f"unknown targets: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 1
    print(f"fuzzing {len(chosen)} targets for {args.minutes} min each (seed {args.seed})")
    results = []
    for t in chosen:
        r = run_target(t, args.minutes * 60, args.seed)
        results.append(r)
        print(f"{t.name:<11} {r['executions']:>9} executions  {r['crashes']} crashes  "
              f"{r['wall_seconds']:>7} s wall  {r['cpu_seconds']:>7} s CPU", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seed": args.seed, "minutes_per_target": args.minutes,
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()),
                                    "targets": results}, indent=2) + "\n")
    print(f"results written to {args.out}")
    return 1 if any(r["crashes"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
