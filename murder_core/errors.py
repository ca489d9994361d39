"""The errors the core raises.

The Salt layer maps :class:`InvalidInput` to ``SaltInvocationError`` and every
other :class:`MurderError` to ``CommandExecutionError``.
"""


class MurderError(Exception):
    """A deploy step failed; the message names the path, release or peer."""


class InvalidInput(MurderError, ValueError):
    """An argument is not acceptable; raised before anything is written."""


class UnsafeArchive(InvalidInput):
    """An archive member would write outside the release or is not allowed."""


class StallError(MurderError):
    """A download made no progress for longer than the stall timeout."""


class VerifyError(MurderError):
    """A downloaded artifact does not match the SHA-256 the deploy announced."""


class ReleaseError(MurderError):
    """The release layout on disk does not allow the requested change."""
