"""The `norm` unit's per-example statistics against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.extract.token_norm import (
    FIELDS,
    prompt_median,
    summarize,
    token_norm_stats,
)


def reference(hidden, prompt, window, threshold, ratio) -> np.ndarray:
    """Row by row in numpy: the lower median of |x| over the prompt, massive tokens, sums
    (each row's first prompt token left out of the sum and its count)."""
    out = np.zeros((hidden.shape[0], len(FIELDS)))
    for r in range(hidden.shape[0]):
        values = np.sort(np.abs(hidden[r][prompt[r]]).ravel())
        median = values[(len(values) - 1) // 2]
        peak = np.abs(hidden[r]).max(-1)
        massive = (peak > threshold) & (peak > ratio * median)
        kept = prompt[r] & ~massive
        kept[np.flatnonzero(prompt[r])[0]] = False
        norms = np.sort(np.linalg.norm(hidden[r][kept].astype(np.float64), axis=-1))
        out[r] = (
            norms.sum(),
            kept.sum(),
            (prompt[r] & massive).sum(),
            (window[r] & massive).any(),
            norms[(len(norms) - 1) // 2] if len(norms) else np.nan,  # the lower median
        )
    return out


def test_stats_match_a_row_by_row_reference():
    rng = np.random.default_rng(0)
    batch, seq, hid = 6, 19, 40
    hidden = rng.normal(size=(batch, seq, hid)).astype(np.float32)
    lengths = [19, 12, 15, 19, 7, 10]  # left padding: prompts end at the last column
    prompt = np.zeros((batch, seq), dtype=bool)
    for r, n in enumerate(lengths):
        prompt[r, seq - n :] = True
    hidden[4, : seq - 7] = 10.0  # padding that would raise row 4's median if it counted
    hidden[:, 0, 11] = 800.0  # a massive first token, as on real chat models
    prompt[[0, 1, 3, 4, 5], 0] = True  # row 2's first prompt token is an ordinary one
    hidden[2, seq - 15] *= 8  # with 8x an ordinary norm, as a sink below the massive layers
    hidden[3, 5, 2] = -650.0  # one inside a prompt
    hidden[4, 15, 3] = 150.0  # massive against the prompt's median only
    hidden[5, 12, 2] = 30.0  # large, but under the threshold
    hidden[4, 3] = np.nan  # a non-finite padding position (fp16 overflow, say) is left out
    window = np.zeros((batch, seq), dtype=bool)
    window[:, -3:] = True
    window[3, 5] = True  # a window holding a massive token
    got = token_norm_stats(
        torch.from_numpy(hidden), torch.from_numpy(prompt), torch.from_numpy(window), 100.0, 50.0
    )
    want = reference(hidden, prompt, window, 100.0, 50.0)
    assert got.dtype == torch.float64 and got.shape == (batch, len(FIELDS))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert want[:, 2].tolist() == [1, 1, 0, 2, 2, 1]  # the planted massive tokens were found
    assert want[:, 1].tolist() == [18, 12, 14, 17, 6, 10]  # the prompt less first and massive
    assert want[:, 3].tolist() == [0, 0, 0, 1, 0, 0]
    as_bf16 = torch.from_numpy(hidden).bfloat16()
    got16 = token_norm_stats(
        as_bf16, torch.from_numpy(prompt), torch.from_numpy(window), 100.0, 50.0
    )
    want16 = reference(as_bf16.float().numpy(), prompt, window, 100.0, 50.0)
    np.testing.assert_allclose(got16.numpy(), want16, rtol=1e-6)
    unit = summarize(got)
    assert unit["massive_tokens"] == 7 and unit["window_massive"] == 1
    assert unit["token_norm"] == round(want[:, 0].sum() / want[:, 1].sum(), 6)
    medians = np.sort(want[:, 4])
    assert unit["example_median"] == pytest.approx(medians[(len(medians) - 1) // 2], rel=1e-6)


def test_the_units_check_is_not_raised_by_a_recurring_large_token():
    """A template token under the massive bars but 12x an ordinary token's norm, in every
    prompt: the mean the unit is raises by about a third, the median example's median not."""
    rng = np.random.default_rng(2)
    batch, seq, hid = 8, 30, 64
    hidden = rng.normal(size=(batch, seq, hid)).astype(np.float32)
    hidden[:, 3] *= 12  # peaks near 40: under a threshold of 100
    prompt = np.ones((batch, seq), dtype=bool)
    window = np.zeros((batch, seq), dtype=bool)
    rows = token_norm_stats(
        torch.from_numpy(hidden), torch.from_numpy(prompt), torch.from_numpy(window), 100.0, 1e3
    )
    unit = summarize(rows)
    ordinary = np.delete(np.linalg.norm(hidden, axis=-1)[:, 1:], 2, axis=1)
    assert unit["massive_tokens"] == 0
    assert unit["token_norm"] > 1.3 * ordinary.mean()
    assert unit["example_median"] == pytest.approx(np.median(ordinary), rel=0.03)
    # a row with no kept token (a one-token prompt: its first) has no median and adds none
    prompt[0, 1:] = False
    rows = token_norm_stats(
        torch.from_numpy(hidden), torch.from_numpy(prompt), torch.from_numpy(window), 100.0, 1e3
    )
    assert np.isnan(rows[0, 4].item()) and summarize(rows)["example_median"] == pytest.approx(
        float(np.sort(reference(hidden, prompt, window, 100.0, 1e3)[1:, 4])[3]), rel=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_prompt_median_is_the_lower_median_of_each_rows_prompt_values(dtype):
    rng = np.random.default_rng(1)
    batch, seq, hid = 9, 13, 6
    # ties (values in steps of 0.5) and every parity of the prompt's value count
    magnitude = np.round(np.abs(rng.normal(size=(batch, seq, hid))) * 2) / 2
    prompt = rng.random((batch, seq)) < 0.6
    prompt[0] = False  # no prompt token: NaN, as nanmedian gives
    prompt[1] = True
    prompt[2] = False
    prompt[2, 4] = True  # one token: the median of its dims alone
    magnitude[3, ~prompt[3]] = 1e4  # other tokens' values never count
    magnitude[6] = np.linspace(0.5, 9.5, seq * hid).reshape(seq, hid)  # no ties: each rank shows
    magnitude[6, prompt[6].argmax(), :2] = np.inf  # inf counts, NaNs are left out
    magnitude[6, prompt[6].argmax(), 2:4] = np.nan
    values = torch.from_numpy(magnitude).to(dtype)
    tiny = torch.finfo(dtype).tiny  # row 5 is all subnormals: kept exact and ordered
    values[5] = torch.linspace(1, 3, seq * hid).reshape(seq, hid).to(dtype) * (tiny / 8)
    assert 0 < values[5].min() and values[5].max() < tiny
    got = prompt_median(values, torch.from_numpy(prompt))
    assert got.dtype == dtype
    exact = values.double().numpy()  # the values as stored in `dtype`
    for r in range(batch):
        kept = np.sort(exact[r][prompt[r]].ravel())
        kept = kept[~np.isnan(kept)]
        want = kept[(len(kept) - 1) // 2] if len(kept) else np.nan
        np.testing.assert_equal(got[r].double().item(), want)
