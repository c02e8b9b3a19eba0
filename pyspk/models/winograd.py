"""Winograd minimal filtering F(m, r) for 1-D convolutions on frames as rows (inference).

A stride-1 convolution with r taps over time, y_t = sum_k W_k x[t + k d] (dilation d, C_in ->
C_out channels), computes m consecutive outputs of one dilation phase from n = m + r - 1 inputs
with n matrix products instead of m * r (Winograd 1980, Lavin & Gray 2016):

    Y = A^T [ (G w) (.) (B^T D) ]

per tile, where D holds the tile's n input rows, B^T (n, n) mixes them, G (n, r) mixes the taps
into n weight matrices (precomputed once), (.) is one (rows, C_in) x (C_in, C_out) product per
transformed row and A^T (m, n) mixes the n products into the m outputs. The products take n / m
of the FLOPs of r direct taps: 2/5 for F(4, 5) (the x-vector's first layer), 4/9 for F(6, 3).

The matrices come from Toom-Cook interpolation at n - 1 finite points and infinity
(:func:`toom_cook`, exact rational arithmetic, checked against the direct sum in
tests/test_winograd.py). Small points (0, +-1, +-2, +-1/2) keep the float32 error small (under
1e-5 of the output's scale at 128 channels, tests/test_winograd.py).

:func:`conv_rows_padded` runs every tile of every dilation phase of a whole row buffer at once:
``n`` strided views stacked, one (n, n) product for B^T, one batched product, one (m, n)
product for A^T. The buffer's own zero rows are the convolution's padding, so many utterances
laid out one after another with zero gaps go through one call (pyspk.models.fold).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import List, Tuple

import torch
from torch import nn

# the first n - 1 of these are the finite interpolation points for n = m + r - 1 transformed rows
# (plus the point at infinity); up to n = 8: beyond, points such as +-3 or +-1/4 cost float32 accuracy
POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))


def _polymul(a: List[Fraction], b: List[Fraction]) -> List[Fraction]:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


@lru_cache(maxsize=None)
def toom_cook(m: int, r: int, points: Tuple = None) -> Tuple[list, list, list]:
    """(A^T, G, B^T) as nested tuples of Fractions, (m, n), (n, r), (n, n), such that for every
    input d (n) and filter g (r): y_i = sum_k g_k d_{i+k} = (A^T [(G g) * (B^T d)])_i.

    Correlation is the transpose of the linear convolution s = u * g (u of length m, s of
    length n), which Toom-Cook computes as s = C [(E_g g) * (E_u u)]: E_u, E_g evaluate the
    polynomials at the points (infinity: the leading coefficient), C interpolates (Lagrange
    on the finite points, plus the leading product times prod (x - a_j)). Hence
    A^T = E_u^T, G = E_g, B^T = C^T."""
    if m < 1 or r < 1:
        raise ValueError(f"Winograd F(m, r) needs m, r >= 1, got m={m} r={r}")
    n = m + r - 1
    if points is None and n - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {n - 1} points; the default set has {len(POINTS)} (n <= 8)")
    pts = [Fraction(p) for p in (POINTS[: n - 1] if points is None else points)]
    if len(pts) != n - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {list(points)}")

    def powers(p, count):
        out = [Fraction(1)]
        for _ in range(count - 1):
            out.append(out[-1] * p)
        return out

    eu = [powers(p, m) for p in pts] + [[Fraction(int(i == m - 1)) for i in range(m)]]
    eg = [powers(p, r) for p in pts] + [[Fraction(int(k == r - 1)) for k in range(r)]]
    c = [[Fraction(0)] * n for _ in range(n)]
    for j, aj in enumerate(pts):
        poly, den = [Fraction(1)], Fraction(1)
        for l, al in enumerate(pts):
            if l != j:
                poly = _polymul(poly, [-al, Fraction(1)])
                den *= aj - al
        for i, coef in enumerate(poly):
            c[i][j] = coef / den
    top = [Fraction(1)]
    for al in pts:
        top = _polymul(top, [-al, Fraction(1)])
    for i, coef in enumerate(top):
        c[i][n - 1] = coef
    at = tuple(tuple(eu[j][i] for j in range(n)) for i in range(m))
    bt = tuple(tuple(c[i][j] for i in range(n)) for j in range(n))
    return at, tuple(map(tuple, eg)), bt


class WinogradWeights(nn.Module):
    """The transformed weights and mixing matrices of one convolution, for :func:`conv_rows_padded`
    (buffers: they follow ``.to(device)``).

    ``taps``: (r, C_in, C_out), tap k reading input row t + k * dilation for output row t
    (in padded-buffer coordinates); ``m``: outputs per tile."""

    def __init__(self, taps: torch.Tensor, dilation: int, m: int):
        super().__init__()
        r, self.c_in, self.c_out = taps.shape
        self.r, self.d, self.m, self.n = r, dilation, m, m + r - 1
        at, g, bt = (
            torch.tensor([[float(v) for v in row] for row in mat], dtype=torch.float64) for mat in toom_cook(m, r)
        )
        dt, dev = taps.dtype, taps.device
        # Gw[j] = sum_k G[j, k] W_k, folded in float64
        self.register_buffer("gw", torch.einsum("jk,kio->jio", g, taps.double().cpu()).to(dev, dt).contiguous())
        self.register_buffer("at", at.to(dev, dt))
        self.register_buffer("bt", bt.to(dev, dt))

    def tiles(self, rows: int) -> int:
        """Tiles per dilation phase so that ``rows`` output rows are covered."""
        return max(1, -(-rows // (self.d * self.m)))

    def input_rows(self, tiles: int) -> int:
        """Input rows read for ``tiles`` tiles per phase: d * (m * tiles + r - 1)."""
        return self.d * (self.m * tiles + self.r - 1)


def conv_rows_padded(x: torch.Tensor, w: WinogradWeights, tiles: int) -> torch.Tensor:
    """Output rows 0 .. d*m*tiles - 1 of the convolution, output row t reading input rows
    t + k*d (k < r) of ``x`` (rows, C_in), which must have at least ``w.input_rows(tiles)``
    finite rows (a non-finite row read by a tile spoils the whole tile). Returns a
    (tiles, m, d, C_out) view in row order: row t = d * (m * tile + i) + phase."""
    m, n, d, j = w.m, w.n, w.d, tiles
    xs = x[: w.input_rows(j)].view(m * j + w.r - 1, d * w.c_in)  # [s, phase * C_in + c]
    taps = torch.stack([xs[p : p + m * j : m] for p in range(n)])  # (n, J, d * C_in)
    u = torch.mm(w.bt, taps.view(n, -1)).view(n, j * d, w.c_in)
    prod = torch.bmm(u, w.gw)  # (n, J * d, C_out)
    y = torch.mm(w.at, prod.view(n, -1)).view(m, j, d, w.c_out)
    return y.permute(1, 0, 2, 3)
