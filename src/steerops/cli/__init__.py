"""The `steerops` command: one subcommand per pipeline stage.

Each stage's `command` module exposes `register(subparsers)`; only the module of the stage
named on the command line is imported (see `build_parser`). Flags that override params are
declared with `add_override` / `flags`, which record the dotted params key they set
and take type, choices and help from its field (`steerops.config.flags`).

Scratch runs: a stage registered with `scratch=True` (steer, search) writes the pipeline's
outputs only when it is the pipeline's run: when DVC runs it (DVC sets DVC_STAGE for every
stage command) or with `--pipeline`. Run by hand, it is a scratch run with a folder of its
own, `runs/<stage>-<time>/` next to the params file or `--out DIR`: it reads the pipeline's
outputs (vectors) and writes everything it makes there (see `Params.set_run_folder`).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import importlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from steerops import __version__
from steerops.cli.options import (  # noqa: F401
    _NEGATIVE_VALUE,
    abs_path,
    add_common,
    add_override,
    command_name,
    flags,
    flags_given,
    given_flags_text,
    inputs_flag,
    no_flag,
    overrides_from,
    params_flag,
    run_or_path,
    stage_parser,
)
from steerops.cli.run_folders import (  # noqa: F401
    PROJECT_FILES,
    RUNS_DIR,
    _drop_if_empty,
    check_outside_pipelines,
    check_run_folder,
    display_path,
    load_params_for,
    new_run_folder,
    read_flag,
    rerun_flag,
    run_file,
    run_out_flag,
)
from steerops.cli.stages import STAGES
from steerops.errors import SteeropsError
from steerops.redact import redacted

_invocation: list[str] = []  # this process's command line, as `main` got it


def invocation() -> str | None:
    """`steerops STAGE ARGS...` of the running command (None outside `main`), with the
    credentials (and a server URL's query) of any URL in it left out: it is logged as the
    run's description."""
    if not _invocation:
        return None
    return shlex.join(["steerops", *map(redacted, _invocation)])


def error_line(exc: Exception) -> str:
    """The error line: a SteeropsError's text; an OS error's reason and the file it names."""
    if isinstance(exc, OSError) and not isinstance(exc, SteeropsError):
        # a file where an output folder must go (--out FILE, --report-dir FILE): errno's
        # "File exists" / "Not a directory" do not say which is wrong
        if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
            return f"{exc.filename}: a file is where a folder must be (give a folder path)"
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one error line and exit code 2, like every other bad input (argparse
    prints the whole usage first); subcommand parsers inherit the class.

    A value that starts with a negative number is a value, lists included: argparse before
    Python 3.13 reads `--coefficients -1,1` as a second flag ("expected one argument")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser. Given `argv`, only the stage it names is imported: stage modules pull
    in torch, transformers and scikit-learn, so `steerops --help` and one-line errors come
    back at once. Without `argv`, every stage is registered (tests, documentation)."""
    parser = OneLineParser(
        prog="steerops",
        description="Experiment-tracked activation steering and probing for Hugging Face LMs.",
    )
    parser.add_argument("--version", action="version", version=f"steerops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (target, help_text) in STAGES.items():
        if argv is None or name == chosen:
            module_name, _, function = target.partition(":")
            getattr(importlib.import_module(module_name), function or "register")(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def flag_given_twice(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """A warning when one setting is given twice on a command line (`--vet --no-vet`,
    `--layers 3 --layers 5`, an alias's flag given again), "" when none is. The last one
    wins, as in most command-line tools (an alias's default can be overridden), but a run
    under a value the user did not mean costs a sweep, so it is said."""
    seen: dict[str, tuple[str, str]] = {}
    current = parser
    for token in argv[: argv.index("--")] if "--" in argv else argv:
        sub = _subcommand(current, token)
        if sub is not None:  # `probe train`: the nested command's flags from here on
            current, seen = sub, {}
            continue
        name, _, value = token.partition("=")
        if not name.startswith("--"):
            continue
        matches = [o for o in current._option_string_actions if o.startswith(name)]
        exact = name if name in current._option_string_actions else None
        option = exact or (matches[0] if len(matches) == 1 else None)
        if option is None or option in ("--help", "-h"):
            continue
        dest = current._option_string_actions[option].dest
        if dest in seen:
            first = seen[dest][0]
            if first == option:
                return f"{option} given twice: the last one is used"
            return f"{first} and {option} both given: the last, {option}, is used"
        seen[dest] = (option, value)
    return ""


def _subcommand(parser: argparse.ArgumentParser, token: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and token in action.choices:
            return action.choices[token]
    return None


def _deepest(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    for token in argv:
        sub = _subcommand(parser, token)
        if sub is not None:
            parser = sub
    return parser


def main(argv: list[str] | None = None) -> int:
    # before any stage imports mlflow: its usage telemetry would reach the network on every
    # tracked run (mlflow.telemetry.utils reads it; set to false, it stays the user's choice)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if argv is None:  # the console script: progress as periodic lines when logged to a file
        from steerops.progress import lines_when_not_a_terminal

        lines_when_not_a_terminal()
    argv = sys.argv[1:] if argv is None else list(argv)
    _invocation[:] = argv
    try:  # a Ctrl-C while the stage's libraries import is an interrupt like any other
        parser = build_parser(argv)
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the (sub)command they were given to, with its --help
            given_to = argv[: argv.index(unknown[0])]  # the command before the first one
            _deepest(parser, given_to).error(f"unrecognized arguments: {' '.join(unknown)}")
    except KeyboardInterrupt:
        print("steerops: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):  # the help, then what went wrong: both on stderr
        parser.print_help(sys.stderr)
        print("steerops: error: no command given (one of those above)", file=sys.stderr)
        return 2
    twice = flag_given_twice(parser, argv)
    if twice:
        print(f"steerops {command_name(args)}: warning: {twice}", file=sys.stderr)
    try:
        with _terminated_as_interrupted() as terminated, _interrupts_not_dropped():
            args.func(args)
    except (SteeropsError, OSError) as exc:  # OSError: a path of the wrong kind, a full disk
        from steerops.config import name_the_flag

        line = name_the_flag(error_line(exc), flags_given(args))
        print(f"steerops {command_name(args)}: error: {line}", file=sys.stderr)
        _drop_if_empty(getattr(args, "scratch_folder", None))
        return 2
    except KeyboardInterrupt:
        print(
            f"steerops {command_name(args)}: interrupted; whatever finished before it is kept: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        _drop_if_empty(getattr(args, "scratch_folder", None))
        return 128 + signal.SIGTERM if terminated else 130
    return 0


@contextlib.contextmanager
def _interrupts_not_dropped() -> Iterator[None]:
    """A Ctrl-C (or a SIGTERM, raised as one) that lands while a finaliser runs (a `__del__`
    or weakref callback, which the garbage collector runs between any two lines) is printed
    and dropped by Python, and the stage would run on to its end, then `dvc repro` to the
    next stage, as if none came. Handed to the main thread again instead, it stops the
    stage where it stands, as any other interrupt does."""
    previous = sys.unraisablehook
    if threading.current_thread() is not threading.main_thread():  # signals go to main
        yield
        return
    timers: list[threading.Timer] = []
    rang: list[bool] = []  # timers that sent their interrupt
    closed = threading.RLock()  # the main thread's from the stage's end: no timer sends then
    main = threading.main_thread().ident
    # Where SIGINT is ignored (a job started with `&`), a dropped interrupt came from SIGTERM
    # (`_terminated_as_interrupted`'s handler): sent again as one. SIGINT stays ignored, as
    # the programs the stage starts inherit it (a handler would not be inherited).
    resend = signal.SIGINT
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        resend = signal.SIGTERM if callable(signal.getsignal(signal.SIGTERM)) else resend

    def ring() -> None:
        if not closed.acquire(blocking=False):
            return
        try:
            rang.append(True)
            if hasattr(signal, "pthread_kill") and main is not None:
                # a signal to the main thread itself: it also wakes a main thread waiting in
                # a call (a sleep, a read), which a flag alone would leave waiting
                signal.pthread_kill(main, resend)
            else:  # Windows: raised at the main thread's next line
                _thread.interrupt_main(resend)
        finally:
            closed.release()

    def hook(unraisable) -> None:
        dropped = unraisable.exc_type is not None and issubclass(
            unraisable.exc_type, KeyboardInterrupt
        )
        # signals raise only in the main thread: an interrupt elsewhere is not the user's
        if not dropped or threading.current_thread() is not threading.main_thread():
            previous(unraisable)
            return
        # From another thread a moment later, not from here: raised in this hook, Python
        # would drop it again. One dropped once more (in another finaliser) comes back here.
        timer = threading.Timer(0.01, ring)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    sys.unraisablehook = hook
    interrupted: list[bool] = []
    try:
        yield
    finally:
        sys.unraisablehook = previous
        while True:  # once it is held no timer sends (one sending now finishes first)
            try:
                closed.acquire()
                break
            except KeyboardInterrupt:  # that timer's (or another Ctrl-C): raised below
                interrupted.append(True)
        for timer in timers:
            timer.cancel()
    # the stage ended before a timer rang, or as one rang: interrupted all the same
    if interrupted or len(rang) < len(timers):
        raise KeyboardInterrupt


@contextlib.contextmanager
def _terminated_as_interrupted() -> Iterator[list[bool]]:
    """SIGTERM (a scheduler preempting the job, `timeout`, `kill`) stops a stage the way
    Ctrl-C does: finished work kept, rows in flight saved, its tracking runs ended as
    killed. Yields a list that holds True once a SIGTERM came."""
    came: list[bool] = []
    if threading.current_thread() is not threading.main_thread():  # signals go to main
        yield came
        return

    def interrupt(signum, frame):
        came.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)
