"""Consensus: permission rules, block and transaction validation, mining diversity, fork choice."""
