"""Winograd F(m, r) (pyspk/models/winograd.py): the Toom-Cook matrices are exact, and the
row-buffer convolution is conv1d's."""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from pyspk.models.winograd import WinogradWeights, conv_rows_padded, toom_cook


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (6, 3), (2, 5), (4, 5), (3, 2), (1, 3)])
def test_toom_cook_is_exact_correlation(m, r):
    at, g, bt = toom_cook(m, r)
    n = m + r - 1
    # the bilinear identity y_i = sum_k g_k d_{i+k}, coefficient by coefficient, in exact rationals
    for i in range(m):
        for k in range(r):
            for p in range(n):
                coef = sum(at[i][j] * g[j][k] * bt[j][p] for j in range(n))
                assert coef == Fraction(int(p == i + k)), (i, k, p, coef)


def test_toom_cook_rejects_bad_points():
    with pytest.raises(ValueError, match="distinct"):
        toom_cook(2, 3, (0, 1, 1))
    with pytest.raises(ValueError, match=">= 1"):
        toom_cook(0, 3)


def _reference(x, w, d):
    """conv1d with zero padding that keeps T, on (T, C_in) rows; w (C_out, C_in, r)."""
    pad = d * (w.shape[2] - 1) // 2
    return F.conv1d(x.t()[None], w, padding=pad, dilation=d)[0].t()


@pytest.mark.parametrize("m,r,d", [(4, 5, 1), (6, 3, 2), (6, 3, 3), (4, 3, 1), (2, 3, 2), (2, 5, 1)])
@pytest.mark.parametrize("frames", [1, 2, 7, 37])
def test_conv_rows_padded_is_conv1d(m, r, d, frames):
    torch.manual_seed(frames * 10 + m)
    c_in, c_out = 6, 5
    w = torch.randn(c_out, c_in, r, dtype=torch.float64)
    x = torch.randn(frames, c_in, dtype=torch.float64)
    ww = WinogradWeights(w.permute(2, 1, 0).contiguous(), d, m)
    pad = d * (r - 1) // 2
    j = ww.tiles(frames)
    buf = torch.zeros(pad + ww.input_rows(j), c_in, dtype=torch.float64)  # zero rows: the padding
    buf[pad : pad + frames] = x
    y = conv_rows_padded(buf, ww, j).reshape(-1, c_out)[:frames]
    torch.testing.assert_close(y, _reference(x, w, d), rtol=1e-12, atol=1e-12)


def test_conv_rows_padded_float32_error_is_small():
    torch.manual_seed(0)
    w = torch.randn(128, 128, 3) / 20
    x = torch.relu(torch.randn(447, 128))
    ww = WinogradWeights(w.permute(2, 1, 0).contiguous(), 2, 6)
    j = ww.tiles(447)
    buf = torch.zeros(2 + ww.input_rows(j), 128)
    buf[2:449] = x
    y = conv_rows_padded(buf, ww, j).reshape(-1, 128)[:447]
    ref = _reference(x.double(), w.double(), 2)
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_weights_follow_the_module_dtype_and_device():
    ww = WinogradWeights(torch.randn(3, 4, 5), 1, 4).double()
    assert ww.gw.dtype == torch.float64 and ww.at.dtype == torch.float64 and ww.bt.dtype == torch.float64
