"""Fuzzing targets for the decoders and parsers that take hostile bytes (not run in CI).

`python -m bench.fuzz --minutes N` runs every target for N minutes (hypothesis-driven
generation and mutation of valid seeds), prints executions and crashes per target and writes
bench/results/fuzz.json. A crash is any exception a target's contract does not allow, or a
broken invariant (a decoded value that does not re-encode to the same bytes).
"""
