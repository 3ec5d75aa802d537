"""The command's frame: the click group that turns every error into one line
(exit 1 for processing, 2 for usage, 130 interrupted), commands that take a
negative inline matrix as an argument, and the output helpers."""

from __future__ import annotations

import os
import re
import sys

import click

from .._process import quiet_stdout, say
from ..errors import KernelcliError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(click.ClickException):
    """A one-line error for the user, with the exit status it deserves."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        say(f"kernelcli: error: {self.format_message()}")


#: A word that is an inline matrix starting with a minus sign ("-1,0,1;-2,0,2;-1,0,1").
_NEGATIVE_MATRIX = re.compile(r"^-[0-9.]")


class MatrixArgsCommand(click.Command):
    """A command whose arguments may be inline matrices that start with a
    minus sign, as the kernel table prints them: such a word is an argument,
    not an unknown option (unless it is the value of the option before it,
    as in ``--offset -128``, an option's own name, as ``-0``, or comes after ``--``)."""

    def parse_args(self, ctx, args):
        valued = {name for p in self.get_params(ctx)
                  if isinstance(p, click.Option) and not p.is_flag and not p.count
                  for name in p.opts + p.secondary_opts}
        named = {name for p in self.get_params(ctx) if isinstance(p, click.Option)
                 for name in p.opts + p.secondary_opts}
        words, shielded, value_next = [], set(), False
        for i, arg in enumerate(args):
            if arg == "--":
                words.extend(args[i:])
                break
            if not value_next and arg not in named and _NEGATIVE_MATRIX.match(arg):
                arg = " " + arg  # not an option to click's parser; the value is stripped below
                shielded.add(arg)
            value_next = arg in valued
            words.append(arg)
        rest = super().parse_args(ctx, words)
        for name, value in ctx.params.items():
            if isinstance(value, str) and value in shielded:
                ctx.params[name] = value[1:]
        return rest


class KernelcliGroup(click.Group):
    """Turns every exception from a command into a clear message and exit status."""

    command_class = MatrixArgsCommand

    def invoke(self, ctx):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KernelcliError as e:
            if debug:
                raise
            raise Failure(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            say("kernelcli: interrupted")
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:
            quiet_stdout()
            raise click.exceptions.Exit(0) from None
        except MemoryError:
            if debug:
                raise
            raise Failure("not enough memory for this image and these options", 1) from None
        except Exception as e:
            if debug:
                raise
            raise Failure(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", 1) from None


    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Like click's, but every error is one line: ``kernelcli: error: ...``."""
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            say(f"kernelcli: error: {e.format_message()}{where}")
            rv = e.exit_code
        except click.ClickException as e:
            e.show()
            rv = e.exit_code
        except click.exceptions.Abort:
            say("kernelcli: interrupted")
            rv = 130
        except BrokenPipeError:  # --help or --version into a pipe whose reader went away
            quiet_stdout()
            rv = 0
        except OSError as e:  # what --help and --version print (all else is translated in invoke)
            if os.environ.get("KERNELCLI_DEBUG") or "--debug" in (args if args is not None else sys.argv[1:]):
                raise
            say(f"kernelcli: error: cannot write to stdout: {e.strerror or e}")
            quiet_stdout()
            rv = 1
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def emit(text: str) -> None:
    """A command's text output on stdout; a failed write is a one-line error."""
    try:
        click.echo(text)
    except BrokenPipeError:
        raise
    except OSError as e:
        raise Failure(f"cannot write to stdout: {e.strerror or e}", 1) from None


def note(ctx_quiet: bool, messages) -> None:
    if not ctx_quiet:
        for m in messages:
            say(f"kernelcli: note: {m}")
