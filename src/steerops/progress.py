"""Progress that shows in a log file as well as on a terminal.

tqdm draws a bar on a terminal; with `disable=None` it draws nothing when stderr is a file
or a pipe, and enabled it redraws one line with carriage returns, so a log shows a long
stage as silence. Off a terminal, `LogLines` prints a plain line (description, count,
percentage, elapsed and remaining time) at most every `STEEROPS_PROGRESS_S` seconds
(default 30) and when the loop ends.

`bar(...)` is the progress bar for new code; `lines_when_not_a_terminal()` (called by the
`steerops` console script) makes the bars of every module imported after it behave so.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import std as tqdm_std

DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get("STEEROPS_PROGRESS_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


class LogLines(tqdm_std.tqdm):
    """A tqdm that writes a whole line per update, every `interval_s()` seconds at most."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("disable") is None:  # "only on a terminal": here, always
            kwargs["disable"] = False
        kwargs.setdefault("file", sys.stderr)
        kwargs["mininterval"] = max(interval_s(), kwargs.get("mininterval") or 0)
        kwargs["maxinterval"] = max(kwargs["mininterval"], kwargs.get("maxinterval") or 0)
        kwargs["dynamic_ncols"] = False
        kwargs["ncols"] = 0  # no bar: the counts and times only
        # a terminal's nested bars clear themselves (leave=False); a log keeps the last line,
        # or a loop shorter than the interval would read as stopped at 0
        kwargs["leave"] = True
        self._said = ""
        super().__init__(*args, **kwargs)
        if hasattr(self, "fp"):  # (a disabled bar has none)
            self.fp = _NoBlanks(self.fp)  # tqdm's own carriage returns and newlines

    @property
    def format_dict(self) -> dict[str, Any]:
        # Without a bar tqdm ignores `bar_format` and prints the count with str(): a count
        # in fractions of rows (steered decoding credits tokens) read 85.33333333333333/280.
        values = super().format_dict
        if isinstance(values["n"], float):
            n = values["n"]
            values["n"] = int(n) if n.is_integer() else round(n, 1)
        return values

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        line = (msg if msg is not None else self.__str__()).strip()
        if line and line != self._said:  # (close() sets `disable` before its last display)
            self._said = line
            self.fp.write(line + "\n")
            self.fp.flush()
        return True


class _NoBlanks:
    """A stream that passes on text with something to say and drops the rest."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar(*args: Any, **kwargs: Any) -> tqdm_std.tqdm:
    """A tqdm bar on a terminal, periodic lines elsewhere (`disable=True` still hides it)."""
    cls = tqdm_std.tqdm if is_terminal(kwargs.get("file")) else LogLines
    return cls(*args, **kwargs)


def lines_when_not_a_terminal() -> None:
    """Off a terminal, make `tqdm.tqdm` and `tqdm.auto.tqdm` (as imported by the modules
    loaded after this call) print periodic lines instead of nothing."""
    if is_terminal():
        return
    import tqdm
    import tqdm.auto

    tqdm.tqdm = LogLines  # type: ignore[misc]
    tqdm.auto.tqdm = LogLines  # type: ignore[misc]
