"""Where a run's records last: `dvc exp run --temp` and queued experiments (`dvc exp run
--queue`, `dvc queue start`) run the pipeline in a copy of the repository under
`.dvc/tmp/exps/<workspace>/`, removed when the experiment ends, with every untracked file in
it: an MLflow store (or a journal of unsent runs), an Optuna study or a judge cache next to
the params file there would go with it. Such a folder maps to the same folder of the
repository the workspace copies (found by the copy's `.dvc` folder, whatever DVC nests the
workspace in).
"""

from __future__ import annotations

from pathlib import Path

EXPERIMENT_WORKSPACES = (".dvc", "tmp", "exps")  # DVC's parent of temporary workspaces


def lasting_folder(folder: str | Path) -> Path:
    """`folder`, or for one inside a temporary DVC experiment workspace the same folder
    (relative to the DVC root) in the repository that owns the workspace."""
    folder = Path(folder).resolve()
    parts = folder.parts
    n = len(EXPERIMENT_WORKSPACES)
    for i in range(1, len(parts) - n):
        if parts[i : i + n] != EXPERIMENT_WORKSPACES:
            continue
        workspaces = Path(*parts[: i + n])
        # the DVC root inside the copy: the nearest folder holding .dvc (the copy's top, or
        # below it for a repository made with --subdir)
        for inner in (folder, *folder.parents):
            if inner == workspaces:
                break
            if (inner / ".dvc").is_dir():
                return Path(*parts[:i]) / folder.relative_to(inner)
    return folder
