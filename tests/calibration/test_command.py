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


def test_the_run_keeps_the_count_of_massive_dims_apart_from_each_layers(tmp_path):
    """The run's `n_massive_dims` is the calibration's massive dims (507 on SmolLM2), not
    overwritten by a layer's count: each layer's count is a series of its own."""
    from steerops.calibration.command import _log

    class Recorder:
        def __init__(self):
            self.metrics: list[tuple[str, float, int | None]] = []

        def log_params(self, params):
            pass

        def log_metrics(self, metrics, step=None):
            self.metrics += [(k, v, step) for k, v in metrics.items()]

        def set_tags(self, tags):
            pass

        def log_artifact(self, path, artifact_path=None):
            pass

    def layer(massive):
        return {"norm": 1.0, "median_abs": 1.0, "max_median_ratio": 1.0, "massive_dims": massive}

    record = {
        "variant": "instruct",
        "model": {"id": "m"},
        "n_prompts": 2,
        "settings": {},
        "n_tokens": 10,
        "seconds": 1.0,
        "aggregate": {"global_dims": [507, 100], "massive_dims": [507]},
        "layers": {"0": layer([]), "1": layer([{"dim": 507}]), "2": layer([])},
    }
    tracker = Recorder()
    _log(tracker, record, tmp_path / "c.json", tmp_path / "h.png")
    by_key: dict[str, list] = {}
    for key, value, step in tracker.metrics:
        by_key.setdefault(key, []).append((step, value))
    assert by_key["n_massive_dims"] == [(None, 1)]
    assert sorted(by_key["layer_n_massive_dims"]) == [(0, 0), (1, 1), (2, 0)]
