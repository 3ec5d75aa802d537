"""The exceptions kernelcli raises on purpose.

The command line turns every :class:`KernelcliError` into a one-line message
on stderr: :class:`UsageError` exits with status 2 (the user asked for
something impossible), everything else with status 1 (the input could not be
processed). Anything that is not a ``KernelcliError`` is a bug.
"""


class KernelcliError(Exception):
    """Base class: an error with a message meant for the user."""

    exit_code = 1


class UsageError(KernelcliError, ValueError):
    """An option or argument value that cannot work (bad stride, unknown pool kind...)."""

    exit_code = 2


class KernelError(KernelcliError, ValueError):
    """A kernel that cannot be found or parsed (unknown name, ragged rows, NaN...)."""

    exit_code = 2


class ImageReadError(KernelcliError):
    """An input file or stream that cannot be read as an image or array."""


class ImageWriteError(KernelcliError):
    """An output that cannot be written."""
