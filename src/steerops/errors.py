"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class SteeropsError(Exception):
    """Bad input or a missing prerequisite, reported to the user as one line."""
