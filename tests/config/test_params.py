"""Params validation: bad config gives one line naming the key or path, and exit code 2."""

from __future__ import annotations

import pytest
import yaml

from steerops.cli import main
from steerops.config import Params, load_params
from steerops.errors import SteeropsError


def _write(tmp_path, data) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_defaults_point_at_the_toy_world():
    params = Params()
    assert params.models["base"].id == "data/toy/model"
    assert params.traits.root == "data/toy/traits"
    assert params.traits.names == ["toy/refusal"]
    assert params.judge.kind == "toy"


def test_repo_params_file_is_valid():
    from pathlib import Path

    params = load_params(Path(__file__).parents[2] / "params.yaml")
    assert params.search.sampler in ("gp", "tpe")
    assert {"base", "instruct"} <= set(params.models)


def test_relative_paths_resolve_against_params_dir(tmp_path):
    params = load_params(_write(tmp_path, {"paths": {"out": "results"}}))
    assert params.out == tmp_path.resolve() / "results"


def test_overrides_replace_params(tmp_path):
    params = load_params(_write(tmp_path, {"seed": 1}), {"seed": 7, "steering.max_new_tokens": 5})
    assert params.seed == 7
    assert params.steering.max_new_tokens == 5


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"steering": {"layerz": "all"}}, "steering.layerz: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        # a typo names the key it is one slip from, in a nested block and a mapping's entry
        (
            {"steering": {"coeficient_unit": "norm"}},
            "steering.coeficient_unit: unknown key (did you mean steering.coefficient_unit?)",
        ),
        (
            {"models": {"base": {"id": "x", "dtpye": "bfloat16"}}},
            "models.base.dtpye: unknown key (did you mean models.base.dtype?)",
        ),
        ({"seeed": 1}, "seeed: unknown key (did you mean seed?)"),
        ({"seed": "abc"}, "seed: Input should be a valid integer"),
        ({"steering": {"max_new_tokens": "many"}}, "steering.max_new_tokens:"),
        ({"models": {"base": {"id": "x", "dtype": "float8"}}}, "models.base.dtype:"),
        ({"judge": {"kind": "oracle"}}, "judge.kind:"),
        # a socket timeout past the platform's time_t fails only at the first request
        ({"judge": {"timeout_s": 1e10}}, "judge.timeout_s: Input should be less than or equal"),
        ({"judge": {"max_backoff_s": 1e300}}, "judge.max_backoff_s: Input should be less"),
        ("seed: [1, 2\n", "malformed YAML"),
        (
            "extraction:\n  positions: [prompt[-1], response[:5]]\n",
            "malformed YAML (line 2: expected ',' or ']', but got '['; quote specs with "
            "brackets, e.g. 'prompt[-1]')",
        ),
        ("steering:\n  layers: 010\n", "line 2: 010 reads as 8 (octal in YAML)"),
        ("steering:\n  layers: 1:30\n", "line 2: 1:30 reads as 90 (base 60 in YAML)"),
        ({"generate": {"max_new_tokens": True}}, "generate.max_new_tokens: expected a number"),
        ({"steering": {"coefficients": [0.5, True]}}, "steering.coefficients: expected a num"),
        ({"seed": False}, "seed: expected a number, not true/false"),
        # judge scores are 0-100: 200 would empty every vetting after replacing good responses
        ({"generate": {"positive_min": 200}}, "generate.positive_min: Input should be less"),
        ({"generate": {"negative_max": -5}}, "generate.negative_max: Input should be greater"),
        # each layer's fit is seeded seed * 1000 + layer, which sklearn takes below 2**32
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 20240601}, "seed: Input should be less than or equal to 4294000"),
        ({"search": {"seed": 2**32}}, "search.seed: Input should be less than or equal to"),
        ({"probes": {"split_seed": -3}}, "probes.split_seed: Input should be greater than"),
        # a live worker beats every heartbeat_s: a grace within it takes over live trials
        ({"search": {"heartbeat_s": 60, "grace_s": 5}}, "grace_s (5) must exceed heartbeat_s"),
        ({"generate": {"rollouts": 2}}, "rollouts > 1 needs temperature > 0"),
        ({"generate": {"paired_filter": True}}, "paired_filter needs vet: true"),
        ({"steering": {"coefficients": []}}, "steering.coefficients: empty; give at least 1 item"),
        # a repeat would be one config counted twice in the served and progress counts
        (
            {"steering": {"coefficients": [1e9, 1, 0.5, 1.0, 0.5]}},
            "steering.coefficients: 0.5, 1 given more than once",
        ),
        # no trait would make every stage a silent no-op that exits 0
        ({"traits": {"names": []}}, "traits.names: empty; give at least 1 item"),
        # checked when params load, before any stage works on the names before it
        ({"traits": {"names": ["a/b", "refusal"]}}, "traits.names: trait 'refusal': expected"),
        ({"traits": {"names": ["a/../b"]}}, "traits.names: trait 'a/../b': expected CATEGORY"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path, data, expected):
    with pytest.raises(SteeropsError) as info:
        load_params(_write(tmp_path, data))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    if message.endswith("bogus: unknown key"):  # nothing close: no guess
        assert "did you mean" not in message


def test_missing_params_file(tmp_path):
    with pytest.raises(SteeropsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    # a folder: said so, with the file it probably meant when it holds one
    with pytest.raises(SteeropsError) as err:
        load_params(tmp_path)
    assert str(err.value) == f"params file: {tmp_path} is a folder, not a YAML file"
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    with pytest.raises(SteeropsError, match=r"is a folder, not a YAML file \(its params.yaml\?\)"):
        load_params(tmp_path)


def test_unknown_model_variant(tmp_path):
    params = load_params(_write(tmp_path, {}))
    with pytest.raises(SteeropsError, match=r"models.chat: unknown model variant"):
        params.variant("chat")


@pytest.mark.parametrize(
    ("data", "needle"),
    [({"steering": {"layerz": "all"}}, "steering.layerz: unknown key"), ({"seed": "abc"}, "seed:")],
)
def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys, data, needle):
    path = _write(tmp_path, data)
    code = main(["toy", "--params", path, "--out", str(tmp_path / "toy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "toy").exists()


def test_cli_missing_params_file_exit_2(tmp_path, capsys):
    code = main(["toy", "--params", str(tmp_path / "missing.yaml")])
    assert code == 2
    assert "params file not found" in capsys.readouterr().err


def test_layer_specs_written_as_yaml_numbers_or_lists_stay_spec_text(tmp_path):
    path = _write(
        tmp_path,
        "extraction:\n  layers: 15\nsteering:\n  layers: [5, 10, '20-22']\n"
        "search:\n  layers: 3\nprobes:\n  layers: 0-30:5\n",
    )
    params = load_params(path)
    assert str(params.extraction.layers) == "15"
    assert str(params.steering.layers) == "5,10,20-22"
    assert str(params.search.layers) == "3"
    assert str(params.probes.layers) == "0-30:5"
    # typed when loaded, serialised back to the same text
    assert params.steering.layers.resolve(24) == [5, 10, 20, 21, 22]
    dumped = params.model_dump(mode="json")
    assert (dumped["steering"]["layers"], dumped["probes"]["layers"]) == ("5,10,20-22", "0-30:5")
    with pytest.raises(SteeropsError, match="steering.layers"):
        load_params(_write(tmp_path, {"steering": {"layers": {"a": 1}}}))


def test_two_spellings_of_one_position_are_one_position(tmp_path):
    # built, not written out: the repo's own spellings are held to be canonical
    same_last, same_first5 = "prompt[-1" + ":]", "response[0" + ":5]"
    spellings = ["prompt[-1]", same_last, "response[:5]", same_first5, "prompt[-1]"]
    block = {"positions": spellings}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"extraction": block, "steering": block, "search": block}))
    params = load_params(path)
    for positions in (
        params.extraction.positions,
        params.steering.positions,
        params.search.positions,
    ):
        assert [p.text for p in positions] == ["prompt[-1]", "response[:5]"]


def test_a_trait_named_twice_runs_once():
    params = load_params(None, {"traits.names": ["toy/refusal", "a/b", "toy/refusal"]})
    assert params.traits.names == ["toy/refusal", "a/b"]  # first order kept
    # a shell's completion slash is the same trait, spelled one way in every output
    params = load_params(None, {"traits.names": ["toy/refusal/", "a/b", "toy/refusal"]})
    assert params.traits.names == ["toy/refusal", "a/b"]
    assert params.model_dump()["traits"]["names"] == ["toy/refusal", "a/b"]


def test_two_spellings_of_one_method_are_one_method(tmp_path):
    spellings = ["mean_diff_dims3-7", "mean_diff", "mean_diff_dims7-" + "03", "mean_diff"]
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "steering": {"methods": spellings},
                "search": {"methods": spellings},
                "vectors": {"methods": spellings},
                "cleaning": {"variants": spellings[:1] + spellings[2:3]},
            }
        )
    )
    params = load_params(path)
    for methods in (params.steering.methods, params.search.methods, params.vectors.methods):
        assert [m.name for m in methods] == ["mean_diff_dims3-7", "mean_diff"]
    assert [m.name for m in params.cleaning.variants] == ["mean_diff_dims3-7"]


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            "steering.layers: '7' is out of range",
            "--layers: '7' is out of range (params: steering.layers)",
        ),
        (  # an item of a list the flag set
            "steering.coefficients.1: Input should be a finite number",
            "--coefficients: Input should be a finite number (params: steering.coefficients.1)",
        ),
        (  # a key followed by the value it is about
            "steering.layers '9-9': selects no layer",
            "--layers '9-9': selects no layer (params: steering.layers)",
        ),
        (
            "models.base.device: 'x' is not a device",
            "--device: 'x' is not a device (params: models.base.device)",
        ),
        # keys no flag set, or text that only starts like one, stay as they are
        ("steering.direction: bad", "steering.direction: bad"),
        ("steering.layers_extra: bad", "steering.layers_extra: bad"),
        ("models.base.id: cannot load", "models.base.id: cannot load"),
        ("vectors not found: x", "vectors not found: x"),
    ],
)
def test_an_error_about_a_key_a_flag_set_names_the_flag(message, expected):
    from steerops.config import name_the_flag

    flags = {
        "steering.layers": "--layers",
        "steering.coefficients": "--coefficients",
        "models.*.device": "--device",
    }
    assert name_the_flag(message, flags) == expected


@pytest.mark.parametrize(
    "written, shown",
    [
        ("1e400", "'1e400' is out of range (beyond 1.8e308, the largest float)"),
        ("1.0e+400", "'1.0e+400' is out of range (beyond 1.8e308, the largest float)"),
        ("-1.5e+999", "'-1.5e+999' is out of range (beyond 1.8e308, the largest float)"),
        (".inf", "'.inf' is not a finite number"),
        (".nan", "'.nan' is not a finite number"),
    ],
)
def test_a_number_in_params_that_is_not_finite_is_named_as_written(tmp_path, written, shown):
    path = _write(tmp_path, f"steering: {{coefficients: [0.5, {written}], min_coherence: 60}}\n")
    with pytest.raises(SteeropsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: steering.coefficients.1: {shown}"


@pytest.mark.parametrize("block", ["[1, 2]", "null", "7"])
def test_a_flag_into_a_malformed_block_gives_the_files_own_error(tmp_path, block):
    """A flag setting `steering.layers` does not replace `steering: [1, 2]` (or null) with
    the block's defaults: the error is the one the file gives without the flag."""
    path = _write(tmp_path, f"steering: {block}\n")
    with pytest.raises(SteeropsError) as without:
        load_params(path)
    with pytest.raises(SteeropsError) as with_flag:
        load_params(path, {"steering.layers": "1"}, {"steering.layers": "--layers"})
    assert str(with_flag.value) == str(without.value)
    assert str(without.value).startswith(f"{path}: steering: Input should be a valid dictionary")
    _write(tmp_path, "probes: {ood: [1]}\n")  # a block two levels down
    with pytest.raises(SteeropsError, match=r"params.yaml: probes.ood: Input should be a valid"):
        load_params(path, {"probes.ood.top_k": 3})
    _write(tmp_path, "seed: 1\n")  # an absent block is still made by the flag
    assert str(load_params(path, {"steering.layers": "1"}).steering.layers) == "1"


@pytest.mark.parametrize("text", ["", "\n", "# nothing set yet\n", "~\n"])
def test_an_empty_params_file_is_refused_not_read_as_the_toy_defaults(tmp_path, capsys, text):
    path = _write(tmp_path, text)
    with pytest.raises(SteeropsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: the params file is empty")
    assert "\n" not in str(err.value)
    assert main(["models", "--params", path]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"steerops models: error: {path}: the params file is empty")
    assert not (tmp_path / "outputs").exists()
    assert load_params(_write(tmp_path, "{}\n")).seed == 0  # every default, said explicitly
