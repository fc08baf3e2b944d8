"""Peer-to-peer networking: framing, messages, the permissioned handshake, relay and sync."""
