"""The one error type of configuration loading and validation."""


class ConfigError(ValueError):
    """A configuration file, key or value is invalid; the message names where it came from."""
