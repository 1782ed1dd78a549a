"""The one error class for user mistakes: the CLI shows it as one line on stderr and exits 2.

Each concern names its own subclass (ConfigError, DataError, ResultsError) so a message says
where to look; everything that catches user mistakes catches UserError."""


class UserError(ValueError):
    """A mistake the user can fix: a bad config, missing data, an unusable results folder."""


class ConfigError(UserError):
    """A mistake in a config, a step file or an override."""
