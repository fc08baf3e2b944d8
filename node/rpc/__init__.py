"""JSON-RPC: a transport-free method table and a thin aiohttp adapter."""
