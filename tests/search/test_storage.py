"""Opening a study's storage: a fresh output folder, and storage URLs that cannot work."""

from __future__ import annotations

import optuna
import pytest

from steerops.errors import SteeropsError
from steerops.search.storage import open_storage


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_a_storage_file_in_a_folder_not_made_yet_is_created(tmp_path, scheme):
    # `search --out NEWDIR` put its study in NEWDIR/optuna.db before anything made NEWDIR.
    file = tmp_path / "new" / "deeper" / ("optuna.db" if scheme == "sqlite" else "study.log")
    storage = open_storage(f"{scheme}:///{file}", 30)
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: 1.0, n_trials=1)
    assert file.is_file()


def test_a_storage_folder_that_cannot_be_made_is_one_error_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SteeropsError, match=r"^search.storage: cannot create .*file/sub"):
        open_storage(f"sqlite:///{tmp_path / 'file' / 'sub' / 'optuna.db'}", 30)
