"""`steerops calibrate` refuses a device it cannot use before the model loads or an MLflow
run opens: one error line, exit code 2, no FAILED run."""

from __future__ import annotations

import pytest

from conftest import write_params
from steerops.cli import main
from steerops.models import loading


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "bogus"], "models.instruct.device: 'bogus' is not a device"),
        (["--device", "cuda:99"], "models.instruct.device: cuda:99 is not available"),
    ],
    ids=["not-a-device", "device-not-here"],
)
def test_a_bad_device_fails_before_loading_and_tracking(
    tmp_path, toy_world, monkeypatch, capsys, argv, message
):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad device was refused")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(loading, "load_model", refuse)
    params = write_params(tmp_path, toy_world)
    capsys.readouterr()
    assert main(["calibrate", "--params", str(params), *argv]) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("steerops calibrate: error: ") and message in err
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run was opened
    assert not (tmp_path / "outputs").exists()
