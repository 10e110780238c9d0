"""`steerops calibrate` refuses a device it cannot use before the model loads or an MLflow
run opens: one error line, exit code 2, no FAILED run."""

from __future__ import annotations

import pytest

from conftest import refused_up_front, write_params


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--device", "bogus"],
            "--device: 'bogus' is not a device (cpu, cuda, cuda:1, mps) "
            "(params: models.instruct.device)",
        ),
        (["--device", "cuda:99"], "--device: cuda:99 is not available"),
    ],
    ids=["not-a-device", "device-not-here"],
)
def test_a_bad_device_fails_before_loading_and_tracking(
    tmp_path, toy_world, no_model_loads, capsys, argv, message
):
    params = write_params(tmp_path, toy_world)
    err = refused_up_front(["calibrate", "--params", str(params), *argv], tmp_path, capsys)
    assert message in err
