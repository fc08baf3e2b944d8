"""Configuration: chain parameters (params.dat), runtime config (chainmill.conf), data directories."""
