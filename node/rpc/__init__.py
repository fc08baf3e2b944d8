"""JSON-RPC: a transport-free method table and an HTTP/1.1 server on asyncio's Protocol layer."""
