"""The one base class of errors a user causes and can fix; the CLI prints them as one sentence."""


class UserError(ValueError):
    """A problem with the user's input (config, data, paths), not a bug."""
