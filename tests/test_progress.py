import io

from steerops.progress import LogLines, bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().split("\n") if line]


def test_log_lines_print_whole_lines_with_counts(monkeypatch):
    monkeypatch.setenv("STEEROPS_PROGRESS_S", "0")
    out = io.StringIO()
    with LogLines(total=4, desc="steer", unit="row", file=out) as progress:
        for _ in range(4):
            progress.update(1)
    lines = _lines(out)
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("steer: 100% 4/4")
    assert len(lines) == len(set(lines))  # a line is printed once


def test_a_fractional_count_prints_one_decimal(monkeypatch):
    monkeypatch.setenv("STEEROPS_PROGRESS_S", "0")
    out = io.StringIO()
    with LogLines(total=280, desc="steer", unit="row", file=out) as progress:
        progress.update(256 / 3)
        progress.update(1 / 3)
        progress.update(280 - 257 / 3)
    text = out.getvalue()
    assert "85.3/280" in text
    assert "85.33" not in text
    assert _lines(out)[-1].startswith("steer: 100% 280/280")  # not 280.0


def test_a_bar_that_clears_itself_on_a_terminal_ends_a_log_with_its_count(monkeypatch):
    # `steerops clean`'s per-layer bar (leave=False) used to leave "0% 0/21" as its only line
    monkeypatch.setenv("STEEROPS_PROGRESS_S", "3600")
    out = io.StringIO()
    for _ in LogLines(range(21), desc="mean_diff_cleaned", leave=False, file=out):
        pass
    assert _lines(out)[0].startswith("mean_diff_cleaned:   0% 0/21")
    assert _lines(out)[-1].startswith("mean_diff_cleaned: 100% 21/21")


def test_log_lines_wait_for_their_interval(monkeypatch):
    monkeypatch.setenv("STEEROPS_PROGRESS_S", "3600")
    out = io.StringIO()
    with LogLines(total=100, desc="extract", file=out) as progress:
        for _ in range(100):
            progress.update(1)
    # the first line and the last; none between within the hour
    assert len(_lines(out)) <= 2
    assert "100/100" in _lines(out)[-1]


def test_bar_draws_on_a_terminal_and_prints_lines_elsewhere():
    assert type(bar(total=1, file=_Terminal())) is not LogLines
    assert isinstance(bar(total=1, file=io.StringIO()), LogLines)
    assert bar(total=1, file=io.StringIO(), disable=True).disable
