"""The one exception a user can cause: its message is a plain sentence the CLI prints as is."""


class MailPipelineError(Exception):
    """A problem with the user's input or request (bad file, bad option, unknown import)."""
