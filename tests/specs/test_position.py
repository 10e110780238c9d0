"""Token positions: windows follow Python slicing inside the frame; canonical text; errors name
the bad token."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.specs import max_response_tokens, parse_position, position_slug


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
        ("response[4:2]", "no token at any length"),
        ("all[:0]", "no token at any length"),
        ("prompt[-1:-3]", "no token at any length"),
        ("prompt[2:5:-1]", "no token at any length"),
        ("response[1:2:3:4]", "'1:2:3:4'"),
        ("prompt", "FRAME["),
        ("prompt[]", "empty selector"),
        ("prompt[-1", "FRAME["),
        ("[-1]", "FRAME["),
        ("prompt[\u0661]", "'\u0661'"),  # an Arabic-Indic 1: plain decimals only
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
        ("response[-8:5]", None),  # its start moves with the response's end
        ("response[7:-4:-1]", None),
        ("response[7:2:-1]", 8),
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
    elif needed is None:  # and none is: some longer response reads another window
        pos = parse_position(spec)
        windows = {tuple(pos.window(3, r)) for r in range(1, 41)}
        assert len(windows) > 1


# --- one canonical spelling per selection -------------------------------------------------

LENGTHS = range(0, 25)  # frame lengths compared (longer than any number below reaches)


def selection(spec: str) -> tuple:
    """The reference meaning of `FRAME[SELECTOR]`: the frame's token indices a plain Python
    index or slice picks, for every frame length (prompt and response frames of each)."""
    frame, selector = re.fullmatch(r"(\w+)\[(.*)\]", spec.replace(" ", "")).groups()
    return tuple(tuple(reference_window(frame, selector, p, r)) for p in LENGTHS for r in (0, 1, 7))


EQUIVALENT = [
    ["prompt[1]", "prompt[01]", "prompt[+1]", "prompt[ +001 ]", "prompt[1:2]", "prompt[1:2:5]"],
    ["prompt[0]", "prompt[-0]", "prompt[+0]", "prompt[:1]", "prompt[0::-1]", "prompt[00:1]"],
    ["prompt[-1]", "prompt[-01]", "prompt[-1:]", "prompt[-1::3]", "prompt[:-2:-1]"],
    ["response[:]", "response[0:]", "response[::1]", "response[::]", "response[+0::+1]"],
    ["response[:5]", "response[0:5]", "response[:5:1]", "response[:05]", "response[ : 5 ]"],
    ["prompt[-3:]", "prompt[-3::1]", "prompt[-03:]", "prompt[-3:  :]"],
    ["response[-2]", "response[-2:-1]", "response[-2:-3:-1]", "response[-2:-5:-3]"],
    ["all[:10:3]", "all[:11:3]", "all[0:12:3]"],
    ["all[:-4:-2]", "all[:-5:-2]", "all[-1:-4:-2]"],
    ["response[::-1]", "response[-1::-1]", "response[-01::-01]"],
    ["response[-3::3]", "response[-3::4]", "response[-3::99]"],
    ["all[-3:1]", "all[0:-4:-1]", "all[-3:1:7]"],
]


@pytest.mark.parametrize("spellings", EQUIVALENT, ids=lambda s: s[0])
def test_equivalent_spellings_share_one_canonical_position(spellings):
    canonical = parse_position(spellings[0])
    assert canonical.text == spellings[0]
    for spec in spellings:
        pos = parse_position(spec)
        assert pos == canonical, spec  # text, frame, index and slice fields alike
        assert position_slug(spec) == canonical.slug, spec
        assert selection(spec) == selection(canonical.text), spec  # the examples are right


def _grid():
    numbers = [None, *range(-6, 7)]
    steps = [None, *[s for s in range(-4, 5) if s]]
    text = {None: "", 3: "+3", -2: "-02", 0: "00"}  # a few odd spellings of numbers
    for n in range(-6, 7):
        yield f"[{text.get(n, n)}]"
    for start, stop, step in itertools.product(numbers, numbers, steps):
        step_text = "" if step is None else f":{text.get(step, step)}"
        yield f"[{text.get(start, start)}:{text.get(stop, stop)}{step_text}]"


def test_canonical_text_is_equal_exactly_when_the_selection_is():
    """Over every selector with numbers in -6..6 and steps in -4..4: two spellings share a
    canonical text if and only if Python indexing gives them the same tokens at every frame
    length; a selector that never reads a token is refused."""
    by_selection: dict[tuple, set[str]] = {}
    for frame, selector in itertools.product(("prompt", "all"), _grid()):
        spec = frame + selector
        try:
            pos = parse_position(spec)
        except SteeropsError as err:
            assert "no token at any length" in str(err), spec
            assert not any(selection(spec)), spec
            continue
        assert selection(pos.text) == selection(spec), spec  # never a different selection
        assert parse_position(pos.text) == pos, spec  # round trip: canonical is a fixed point
        assert all(
            list(pos.window(p, r)) == list(parse_position(spec).window(p, r))
            for p, r in [(0, 0), (3, 2), (9, 11)]
        )
        by_selection.setdefault(selection(spec), set()).add(pos.text)
    split = {sel: texts for sel, texts in by_selection.items() if len(texts) > 1}
    assert not split, sorted(split.values())[:5]  # one canonical text per selection
    assert len(by_selection) > 1000


# Folder names (`position_slug`) of the spellings in use before canonicalisation; outputs
# and dvc.lock hold these, so they must not move.
TODAYS_SLUGS = {
    "prompt[-1]": "prompt_m1",
    "response[:5]": "response_to5",
    "prompt[-3:]": "prompt_m3to",
    "prompt[-2:]": "prompt_m2to",
    "response[:]": "response_to",
    "prompt[:]": "prompt_to",
    "all[:]": "all_to",
    "all[1:-1]": "all_1tom1",
    "all[-4:]": "all_m4to",
    "response[-3::2]": "response_m3toto2",
    "response[4::-1]": "response_4totom1",
    "response[::-1]": "response_totom1",
    "response[:-2]": "response_tom2",
    "response[2:7]": "response_2to7",
    "response[3]": "response_3",
    "all[:8]": "all_to8",
}


@pytest.mark.parametrize("spec, slug", TODAYS_SLUGS.items())
def test_canonical_spellings_keep_their_text_and_folder(spec, slug):
    pos = parse_position(spec)
    assert pos.text == spec and str(pos) == spec
    assert position_slug(spec) == pos.slug == slug


def _old_slug(text: str) -> str:
    """The folder name every spelling got before canonicalisation (its text, escaped)."""
    slug = text.replace("]", "").replace("[", "_").replace(":", "to").replace("-", "m")
    return re.sub(r"[^A-Za-z0-9_.]", "_", slug)


def test_positions_written_in_the_repo_are_canonical_and_keep_their_folders():
    root = Path(__file__).parents[2]
    files = [root / "params.yaml", root / "dvc.yaml", root / "README.md"]
    files += [*root.glob("experiments/*/params.yaml"), *root.glob("docs/**/*.md")]
    files += [*root.glob("src/**/*.py"), *root.glob("tests/**/*.py")]
    found = set()
    for path in files:
        if path.is_file() and "specs" not in path.relative_to(root).parts:
            found |= set(re.findall(r"\b(?:prompt|response|all)\[[^\]\s'\"]*\]", path.read_text()))
    checked = 0
    for spec in sorted(found):
        try:
            pos = parse_position(spec)
        except SteeropsError:
            continue  # a bad-input fixture
        assert pos.text == spec, f"{spec} is written in the repo but canonical is {pos.text}"
        assert pos.slug == _old_slug(spec), spec
        checked += 1
    assert {"prompt[-1]", "response[:5]"} <= found and checked >= 10


def test_params_and_flags_hold_the_canonical_spelling(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"extraction": {"positions": ["prompt[-1:]", "response[0:05]"]}})
    )
    overrides = {"steering.positions": ["prompt[+1]"], "probes.position": "prompt[ -01 ]"}
    params = load_params(path, overrides)  # CLI flags arrive as these overrides
    assert [str(p) for p in params.extraction.positions] == ["prompt[-1]", "response[:5]"]
    assert params.steering.positions == [parse_position("prompt[1]")]
    assert params.probes.position.text == "prompt[-1]"
    dumped = params.model_dump(mode="json")
    assert dumped["extraction"]["positions"] == ["prompt[-1]", "response[:5]"]
    assert dumped["steering"]["positions"] == ["prompt[1]"]
