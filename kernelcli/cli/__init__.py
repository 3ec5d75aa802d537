"""The ``kernelcli`` command (entry point :func:`main`): :mod:`.commands`
parses and calls the library, :mod:`.options` and :mod:`.params` hold the
shared options and parameter types, :mod:`.base` the error handling."""

from .commands import cli, main

__all__ = ["cli", "main"]
