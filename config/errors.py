"""The root of every error chainmill raises on purpose, and configuration errors.

The root lives here because config/ is the bottom layer: every other package may import it.
"""


class ChainmillError(Exception):
    """Root of all deliberate chainmill errors; the message is meant for a user."""


class ConfigError(ChainmillError):
    """A parameter or configuration file is missing, malformed, unknown or out of range."""
