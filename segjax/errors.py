"""The errors segjax raises for a bad experiment setup or bad data.

`python -m segjax.main` prints a `ConfigError` (and its subclass `DataError`)
as one line and exits with status 2 instead of a traceback; in a notebook
they are ordinary ValueErrors.
"""


class ConfigError(ValueError):
  """The config, the workdir or the data do not fit together."""


class DataError(ConfigError):
  """A data set's files are missing or malformed; the message names the file."""
