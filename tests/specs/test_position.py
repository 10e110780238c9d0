"""Token positions: windows follow Python slicing inside the frame; canonical text; errors name
the bad token."""

from __future__ import annotations

import itertools

import pytest

from steerops.errors import SteeropsError
from steerops.specs import max_response_tokens, parse_position


def reference_window(frame: str, selector: str, prompt_len: int, response_len: int) -> list:
    """What the spec means, spelled with Python lists: slice the frame's token indices."""
    tokens = list(range(prompt_len + response_len))
    frame_tokens = {"prompt": tokens[:prompt_len], "response": tokens[prompt_len:], "all": tokens}[
        frame
    ]
    if ":" not in selector:
        i = int(selector)
        return [frame_tokens[i]] if -len(frame_tokens) <= i < len(frame_tokens) else []
    parts = [int(p) if p else None for p in selector.split(":")]
    return frame_tokens[slice(*parts)]


SELECTORS = [
    "-1",
    "0",
    "3",
    "-4",
    "12",
    ":",
    ":5",
    "2:",
    "1:-1",
    "-3:",
    "::2",
    "5:1:-1",
    "::-1",
    "-2:-1",
    "4:2",
    "0:100",
]


@pytest.mark.parametrize("frame", ["prompt", "response", "all"])
def test_windows_follow_python_slicing(frame):
    for selector, (p, r) in itertools.product(SELECTORS, [(6, 4), (1, 0), (3, 9), (0, 2)]):
        pos = parse_position(f"{frame}[{selector}]")
        assert list(pos.window(p, r)) == reference_window(frame, selector, p, r), (selector, p, r)


def test_window_examples():
    assert list(parse_position("prompt[-1]").window(5, 3)) == [4]
    assert list(parse_position("response[:5]").window(5, 3)) == [5, 6, 7]
    assert list(parse_position("response[:]").window(5, 3)) == [5, 6, 7]
    assert list(parse_position("all[-2:]").window(5, 3)) == [6, 7]
    assert list(parse_position("response[-1]").window(5, 0)) == []  # empty: dropped
    assert list(parse_position("prompt[10]").window(5, 3)) == []


def test_position_canonical_text_and_frames():
    pos = parse_position(" response[ : 5 ] ")
    assert pos.text == "response[:5]" and pos.frame == "response" and pos.stop == 5
    assert parse_position("prompt[-1]").index == -1
    assert not parse_position("prompt[:]").needs_response
    assert parse_position("response[0]").needs_response
    assert parse_position("all[:3]").needs_response


@pytest.mark.parametrize(
    "spec, token",
    [
        ("resp[:5]", "'resp'"),
        ("response[a]", "'a'"),
        ("response[1:x]", "'x'"),
        ("response[1:2:0]", "zero"),
        ("response[1:2:3:4]", "'1:2:3:4'"),
        ("prompt", "FRAME["),
        ("prompt[]", "empty selector"),
        ("prompt[-1", "FRAME["),
        ("[-1]", "FRAME["),
    ],
)
def test_bad_positions_name_the_token(spec, token):
    with pytest.raises(SteeropsError) as err:
        parse_position(spec)
    message = str(err.value)
    assert token in message and "\n" not in message


@pytest.mark.parametrize(
    "spec, needed",
    [
        ("prompt[-1]", 0),
        ("prompt[:]", 0),
        ("response[:5]", 5),
        ("response[2:7]", 7),
        ("response[3]", 4),
        ("response[0]", 1),
        ("response[-1]", None),
        ("response[:]", None),
        ("response[:-2]", None),
        ("response[4::-1]", 5),
        ("response[::-1]", None),
        ("all[:8]", 8),
        ("all[-1]", None),
    ],
)
def test_max_response_tokens(spec, needed):
    assert max_response_tokens(spec) == needed
    # Generating `needed` tokens is enough: a longer response gives the same window.
    if needed:
        pos = parse_position(spec)
        for p, r in itertools.product([0, 2, 7], [needed + 1, needed + 5, 40]):
            assert list(pos.window(p, r)) == list(pos.window(p, needed)), (p, r)
