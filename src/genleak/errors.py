"""User-facing errors.

A ``GenleakError`` is a mistake in the user's input (a bad split, a missing checkpoint, NaN images).
The CLI prints its one-line message and exits with code 2 instead of showing a stack trace.
"""


class GenleakError(Exception):
    """A user mistake: the message names the bad thing and what to do about it."""


class SplitError(GenleakError):
    """A membership split is unusable (empty side, overlap, mismatched shapes)."""


class DataError(GenleakError):
    """Images are unusable (NaN, out of range, wrong shape or channel count)."""


class TargetError(GenleakError):
    """A target checkpoint is missing or not loadable."""
