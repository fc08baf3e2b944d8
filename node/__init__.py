"""chainmill node: daemon, JSON-RPC server, mempool, miner, hooks and CLI."""
