"""The package layout keeps its promises (docs/internals.md): no import circle, lower layers
never import a stage, stages import each other one way only, and only the CLI reaches a
stage's command module (by name, so `steerops --help` stays light)."""

from __future__ import annotations

import codebase
from steerops.cli import STAGES

# Shared by several stages; none of them imports a stage package. The toy world's library
# (corpus, exact judge, model builder) is here too: the judges use its exact judge; only
# `toy.command`, its stage, imports a stage package.
LOWER = (
    "errors",
    "redact",
    "paths",
    "io",
    "specs",
    "config",
    "traits",
    "tracking",
    "liveness",
    "sqlite_url",
    "workspace",
    "progress",
    "summary",
    "stats",
    "cli",
    "models",
    "judges",
    "toy",
)
STAGE_PACKAGES = (
    "smollm2",
    "generate",
    "extract",
    "calibration",
    "vectors",
    "steering",
    "search",
    "report",
    "probes",
)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_command(module: str) -> bool:
    return module.endswith(".command")


def test_no_import_circle():
    assert codebase.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = {m: set(codebase.imports(m)) for m in codebase.modules()}
    assert codebase.cycles(graph) == []


def test_lower_layers_never_import_a_stage():
    offending = sorted(
        f"{m} -> {d}"
        for m in codebase.modules()
        if _package(m) in LOWER and not _is_command(m)
        for d in codebase.imports(m)
        if _package(d) in STAGE_PACKAGES or _is_command(d)
    )
    assert offending == []


def test_stages_import_each_other_one_way_and_never_a_command():
    edges: dict[str, set[str]] = {}
    for m in codebase.modules():
        for d in codebase.imports(m):
            assert not _is_command(d), f"{m} imports the command module {d}"
            a, b = _package(m), _package(d)
            if a != b and a in STAGE_PACKAGES and b in STAGE_PACKAGES:
                edges.setdefault(a, set()).add(b)
    assert codebase.cycles(edges) == []


def test_every_stage_is_a_package_with_its_command():
    for name, (target, _) in STAGES.items():
        module = target.partition(":")[0]
        assert _is_command(module) and module in codebase.modules(), name
        # toy and models: a lower layer's library with a stage of its own (the toy world's
        # build; each model variant's identity file)
        assert _package(module) in STAGE_PACKAGES + ("toy", "models"), name
    top_level = {m.split(".")[1] for m in codebase.modules() if m.count(".") >= 1}
    assert top_level <= set(LOWER + STAGE_PACKAGES + ("__main__",))
