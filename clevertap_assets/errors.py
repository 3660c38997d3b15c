"""The error of a bad setting, below every module that checks one (the core settings, each
destination's, CleverTap's regions): the CLI and the connection check turn it into one clear
message whichever raised it."""


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names it and what is allowed."""
