"""Confound residuals match sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from steerops.probes.confounds import residualize


def test_confound_residuals_match_sklearn():
    rng = np.random.default_rng(0)
    tasks = [f"t{i}" for i in range(80)]
    topic = rng.choice(["x", "y", "z"], 80)
    source = rng.choice(["p", "q"], 80)
    effect = {"x": 0.0, "y": 2.0, "z": -1.0}
    scores = {
        t: effect[tp] + (s == "q") * 0.5 + rng.normal(0, 0.3)
        for t, tp, s in zip(tasks, topic, source, strict=True)
    }
    confounds = {t: (tp, s) for t, tp, s in zip(tasks[5:], topic[5:], source[5:], strict=True)}
    resid, report = residualize(scores, confounds, ["topic", "source"])
    kept = tasks[5:]
    design = pd.get_dummies(
        pd.DataFrame({"topic": topic[5:], "source": source[5:]}), drop_first=True
    ).astype(float)
    y = np.array([scores[t] for t in kept])
    ref = LinearRegression().fit(design, y)
    np.testing.assert_allclose([resid[t] for t in kept], y - ref.predict(design), atol=1e-9)
    assert report["r2"] == pytest.approx(r2_score(y, ref.predict(design)), abs=1e-9)
    assert report["n_dropped"] == 5 and report["dropped"] == sorted(tasks[:5])
    assert set(resid) == set(kept)
