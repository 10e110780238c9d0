"""Kill and resume: each resumable stage (generate, extract, steer, search) is killed with
SIGKILL at several points (mid-computation, between two artifact writes, just before or
after the last rename), then run again; the resumed outputs equal those of an uninterrupted
run.

Killed runs are subprocesses (`killer.py`); reference and resumed runs run in-process.
Fields that record wall time (`timing`) or what one invocation did itself (a search's
`n_generations.this_run`) are the only ones left out of the comparison.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

import killer
from conftest import write_params
from steerops.cli import main
from steerops.io import read_json, read_jsonl
from steerops.search.store import HELDOUT_FILE as HELDOUT

TRAIT = "toy/refusal"
EXTRACT = ["extract"]
GENERATE = ["generate"]
STEER = [
    "steer",
    "--pipeline",
    "--method",
    "mean_diff",
    "--position",
    "prompt[-1]",
    "--layers",
    "1,2",
    "--coefficients",
    "0.5,1",
    "--max-new-tokens",
    "12",
    "--subset",
    "8",
]

SEARCH = [
    "search",
    "--pipeline",
    "--method",
    "mean_diff",
    "--position",
    "prompt[-1]",
    "--layers",
    "1,2",
    "--trials",
    "8",
    "--batch",
    "2",
]


def _project(folder: Path, toy_world: Path) -> Path:
    """A toy project whose trait has 12 prompts per polarity (quick), tracking off."""
    traits = folder / "traits" / "toy" / "refusal"
    shutil.copytree(toy_world / "traits" / "toy" / "refusal", traits)
    for polarity in ("positive", "negative"):
        lines = (traits / f"{polarity}.txt").read_text().splitlines()[:12]
        (traits / f"{polarity}.txt").write_text("\n".join(lines) + "\n")
    write_params(
        folder,
        toy_world,
        traits={"root": str(folder / "traits"), "names": [TRAIT]},
        tracking={"enabled": False},
        generate={"vet": True, "max_new_tokens": 10, "batch_size": 4},
        extraction={
            "positions": ["prompt[-1]", "response[:3]"],
            "layers": "1,2",
            "shard_examples": 6,
            "token_budget": 96,
        },
    )
    # Paths relative to the params file, so a copied project is a project of its own.
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["paths"]["out"] = "outputs"
    params["traits"]["root"] = "traits"
    params["judge"]["cache_dir"] = "judge_cache"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def _run(folder: Path, argv: list[str]) -> None:
    assert main([*argv, "--params", str(folder / "params.yaml")]) == 0


def _drop_timing(value):
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items() if k not in ("timing", "this_run")}
    if isinstance(value, list):
        return [_drop_timing(v) for v in value]
    return value


def _contents(folder: Path, within: list[str]) -> dict[str, object]:
    """Every file under `within` (relative to `folder`): JSON parsed without timing, JSONL
    as sorted parsed rows, anything else as bytes."""
    out: dict[str, object] = {}
    for top in within:
        for path in sorted((folder / top).rglob("*")):
            if not path.is_file():
                continue
            key = str(path.relative_to(folder))
            if path.suffix == ".json":
                out[key] = _drop_timing(read_json(path))
            elif path.suffix == ".jsonl":
                rows = [_drop_timing(r) for r in read_jsonl(path)]
                out[key] = sorted(json.dumps(r, sort_keys=True) for r in rows)
            else:
                out[key] = path.read_bytes()
    return out


def _holds(want: dict[str, object], *ends: str) -> None:
    """The reference outputs hold a file whose path ends in each of `ends`: two empty
    contents compare equal, whatever a resumed run wrote (or wrote elsewhere)."""
    for end in ends:
        assert any(key.endswith(end) for key in want), (end, sorted(want))


def _kill_and_resume(base: Path, name: str, argv: list[str], kill: str, within: list[str]):
    folder = base.parent / f"{base.name}-{name}"
    shutil.copytree(base, folder)
    result = killer.run([*argv, "--params", str(folder / "params.yaml")], folder, folder, kill)
    assert killer.killed(result), (kill, result.returncode, result.stderr[-2000:])
    _run(folder, argv)
    return _contents(folder, within)


@pytest.fixture(scope="module")
def stages(tmp_path_factory, toy_world):
    """Reference runs of generate, extract, vectors and steer, and the project state before
    each stage (a copy to kill that stage in)."""
    root = tmp_path_factory.mktemp("kill")
    ref = _project(root / "ref", toy_world)
    before = {}
    for stage, argv in (
        ("generate", GENERATE),
        ("extract", EXTRACT),
        ("vectors", ["vectors", "--methods", "mean_diff"]),
        ("steer", STEER),
        ("search", SEARCH),
    ):
        before[stage] = root / f"before-{stage}"
        shutil.copytree(ref, before[stage])
        _run(ref, argv)
    return ref, before


def _points(folder: Path, argv: list[str], name: str = "count") -> dict:
    """Renames (paths, in order) and batch calls of an uninterrupted run of `argv` (counted
    once per folder and name)."""
    probe = folder.parent / f"{folder.name}-{name}"
    if not (probe / "kill_counts.json").is_file():
        shutil.copytree(folder, probe)
        command = [*argv, "--params", str(probe / "params.yaml")]
        result = killer.run(command, probe, probe, "count")
        assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((probe / "kill_counts.json").read_text())


def test_generate_killed_anywhere_resumes_to_the_same_responses(stages):
    ref, before = stages
    within = ["outputs/responses"]
    want = _contents(ref, within)
    _holds(want, "/responses.jsonl", "/summary.json")
    counts = _points(before["generate"], GENERATE)
    renamed = counts["renamed"]
    # each batch of a class kept as it completes, then the class; the completions, then
    # their summary, are written before vetting, and again after it
    names = [Path(p).name for p in renamed]
    b = names.count("positive.jobs.json")  # batches a class
    kept = ["positive.jobs.json"] * b + ["positive.json"]
    kept += ["negative.jobs.json"] * b + ["negative.json"]
    assert b > 1 and names == kept + ["responses.jsonl", "summary.json"] * 2
    at = len(kept)  # renames once both classes are kept
    kills = (
        "call:2",  # in the positives' second batch
        "after:1",  # their first batch kept
        f"after:{b + 1}",  # the positives kept
        f"after:{at}",
        f"after:{at + 2}",
        f"before:{at + 3}",
        f"after:{at + 3}",
        f"after:{at + 4}",
    )
    for kill in kills:
        got = _kill_and_resume(before["generate"], kill.replace(":", ""), GENERATE, kill, within)
        assert got == want, kill


def test_generate_resumed_after_the_completions_only_vets(stages):
    _, before = stages
    folder = before["generate"].parent / "generate-vet-only"
    shutil.copytree(before["generate"], folder)
    argv = [*GENERATE, "--params", str(folder / "params.yaml")]
    renamed = [Path(p).name for p in _points(before["generate"], GENERATE)["renamed"]]
    both_kept = renamed.index("negative.json") + 1
    assert killer.killed(killer.run(argv, folder, folder, f"after:{both_kept}"))
    result = killer.run(argv, folder, folder, "count")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((folder / "kill_counts.json").read_text())["calls"] == 0


def test_extract_killed_anywhere_resumes_to_the_same_activations(stages):
    ref, before = stages
    within = ["outputs/activations"]
    want = _contents(ref, within)
    _holds(want, ".safetensors", "/metadata.json")
    counts = _points(before["extract"], EXTRACT)
    renamed, calls = counts["renamed"], counts["calls"]
    assert calls >= 6 and sum(".partial" in p for p in renamed) >= 6
    last = len(renamed)  # the second position's metadata.json
    assert renamed[-1].endswith("metadata.json") and renamed[-2].endswith(".safetensors")
    for kill in (f"call:{calls // 2}", "after:3", f"before:{last - 1}", f"before:{last}"):
        got = _kill_and_resume(before["extract"], kill.replace(":", ""), EXTRACT, kill, within)
        assert got == want, kill


def test_an_extraction_killed_after_its_last_write_is_finished_in_mlflow(
    tmp_path, toy_world, monkeypatch
):
    """SIGKILLed just after writing its last file (the second position's metadata.json),
    before closing its MLflow run: its outputs are complete and the next run serves them,
    so the run ends FINISHED (at that write), not KILLED. Killed just before it, KILLED."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracked = _project(tmp_path / "tracked", toy_world)
    _run(tracked, GENERATE)
    params = yaml.safe_load((tracked / "params.yaml").read_text())
    params["tracking"] = {}  # on, in mlflow.db next to each copy's params file
    (tracked / "params.yaml").write_text(yaml.safe_dump(params))
    last = len(_points(tracked, EXTRACT)["renamed"])
    for kill, status in ((f"after:{last}", "FINISHED"), (f"before:{last}", "KILLED")):
        folder = tracked.parent / f"{tracked.name}-{kill.replace(':', '')}"
        shutil.copytree(tracked, folder)
        argv = [*EXTRACT, "--params", str(folder / "params.yaml")]
        assert killer.killed(killer.run(argv, folder, folder, kill))
        runs = functools.partial(_runs, MlflowClient(f"sqlite:///{folder / 'mlflow.db'}"))
        deadline = time.monotonic() + 60  # the tracking process ends it once the stage died
        while any(r.info.status == "RUNNING" for r in runs()) and time.monotonic() < deadline:
            time.sleep(0.5)
        first, killed = runs()
        assert (first.info.status, killed.info.status) == ("FINISHED", status), kill
        metadata = folder / "outputs/activations" / TRAIT / "base/response_to3/residual"
        if status == "FINISHED":
            assert killed.info.end_time == int((metadata / "metadata.json").stat().st_mtime * 1000)
            assert "outputs were complete" in killed.data.tags["steerops.ended"]
        _run(folder, EXTRACT)  # served (FINISHED) or resumed (KILLED): a run only for the latter
        assert len(runs()) == (2 if status == "FINISHED" else 3), kill


@pytest.mark.parametrize("to", ["term", "group"])
def test_sigterm_to_the_process_group_ends_the_tracked_run_as_killed(
    tmp_path, toy_world, monkeypatch, to
):
    """A scheduler's SIGTERM reaches the stage and its tracking process at once, mid
    extraction: the tracking process outlives it and records the run KILLED as the stage
    exits (143), and the rerun resumes under a run of its own."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracked = _project(tmp_path / "tracked", toy_world)
    _run(tracked, GENERATE)
    params = yaml.safe_load((tracked / "params.yaml").read_text())
    params["tracking"] = {}  # on, in mlflow.db next to the params file
    (tracked / "params.yaml").write_text(yaml.safe_dump(params))
    calls = _points(tracked, EXTRACT)["calls"]
    argv = [*EXTRACT, "--params", str(tracked / "params.yaml")]
    result = killer.run(argv, tracked, tracked, f"{to}:{calls * 3 // 4}")
    assert killer.terminated(result), (result.returncode, result.stderr[-2000:])
    runs = functools.partial(_runs, MlflowClient(f"sqlite:///{tracked / 'mlflow.db'}"))
    before = [r.info.status for r in runs()]  # at once: not left for a dead stage's cleanup
    assert before[-1] == "KILLED" and set(before) <= {"FINISHED", "KILLED"}
    _run(tracked, EXTRACT)
    assert [r.info.status for r in runs()] == [*before, "FINISHED"]


def _runs(client) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time"])


def test_steer_killed_anywhere_resumes_to_the_same_results(stages):
    ref, before = stages
    within = ["outputs/steering", "metrics"]
    want = _contents(before["search"], within)  # right after steer (the search comes next)
    _holds(want, "/results.jsonl", "/results.csv", "metrics/steer.json")
    counts = _points(before["steer"], STEER)
    last = counts["renames"]
    differ = {}
    # the last prefill (the baseline's rows generate with the configs', in one chunk)
    for kill in (f"call:{counts['calls']}", "after:2", "after:5", f"before:{last}"):
        got = _kill_and_resume(before["steer"], kill.replace(":", ""), STEER, kill, within)
        differ[kill] = sorted(k for k in {*got, *want} if got.get(k) != want.get(k))
    assert differ == {kill: [] for kill in differ}


def test_steer_stopped_by_sigterm_keeps_its_finished_rows(stages, monkeypatch):
    """A scheduler's SIGTERM in the middle of a chunk: the stage stops as on Ctrl-C (exit
    143), the rows that had finished are kept, the rerun generates only the others and
    writes what an uninterrupted run writes."""
    from steerops.steering import session as session_module
    from steerops.steering.in_flight import IN_FLIGHT_FILE

    ref, before = stages
    within = ["outputs/steering", "metrics"]
    want = _contents(before["search"], within)
    argv = [*STEER, "--max-batch-rows", "8"]  # many refills: rows finish all along
    calls = _points(before["steer"], argv, "count-8-rows")["calls"]
    folder = before["steer"].parent / "steer-sigterm"
    shutil.copytree(before["steer"], folder)
    result = killer.run(
        [*argv, "--params", str(folder / "params.yaml")], folder, folder, f"term:{calls // 2}"
    )
    assert killer.terminated(result), (result.returncode, result.stderr[-2000:])
    assert "interrupted" in result.stderr
    [kept_file] = (folder / "outputs" / "steering").rglob(IN_FLIGHT_FILE)
    kept = len(read_jsonl(kept_file))
    rows: list[int] = []
    real = session_module.generate_steered

    def counting(*args, **kwargs):
        rows.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "generate_steered", counting)
    _run(folder, argv)
    # the baseline and 4 configs on 8 questions, all but the kept rows (and nothing again
    # for the response files: their rows were generated in this run)
    assert kept > 0 and sum(rows) == 5 * 8 - kept
    assert not kept_file.exists()
    got = _contents(folder, within)
    assert sorted(k for k in {*got, *want} if got.get(k) != want.get(k)) == []


def test_search_killed_anywhere_resumes_to_the_same_outputs(stages):
    """Killed mid-search (its batch's trials taken over as they stood: same numbers, params
    and sampler seeds), mid held-out evaluation, or between the outputs' writes, the resumed
    search writes what an uninterrupted one writes, held-out responses included."""
    ref, before = stages
    within = ["outputs/search", "metrics"]
    want = _contents(ref, within)
    _holds(want, f"/{HELDOUT}", "/trials.csv", "metrics/search.json")
    counts = _points(before["search"], SEARCH)
    calls, last = counts["calls"], counts["renames"]
    assert [Path(p).name for p in counts["renamed"]][:2] == ["trials.csv", HELDOUT]
    differ = {}
    for kill in ("call:3", f"call:{calls}", "after:1", f"before:{last}"):
        got = _kill_and_resume(before["search"], kill.replace(":", ""), SEARCH, kill, within)
        differ[kill] = sorted(k for k in {*got, *want} if got.get(k) != want.get(k))
    assert differ == {kill: [] for kill in differ}
