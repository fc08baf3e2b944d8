"""Ledger: transaction and block types, canonical encoding, hashing, Merkle trees, keys, chain store."""
