"""The admin console: a web explorer and a JSON admin API that reach a node only through JSON-RPC."""
