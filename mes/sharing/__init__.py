"""Sharing machine observations with partner companies on the chain (issue 9, item 4)."""
