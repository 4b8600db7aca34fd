"""The error segjax raises for a bad experiment setup (config, paths, sizes).

`python -m segjax.main` prints a `ConfigError` as one line and exits with
status 2 instead of a traceback; in a notebook it is an ordinary ValueError.
"""


class ConfigError(ValueError):
  """The config, the workdir or the data do not fit together."""
