"""The offline fbank (:func:`pyspk.features.fbank.compute_fbank_energy`) with less overhead per call.

The loader featurises a window of a few hundred frames per view, where the fixed cost of the
Lhotse module's calls weighs: its pre-emphasis builds a replicate-padded copy of every frame
and its FFT input a zero-padded copy (two ``torch.nn.functional.pad`` of 3-D tensors, a third
of the time on a 2 s window). :func:`fbank_energy` runs the same steps on the same parameters,
taken from the offline extractor itself (its window, mel matrix, epsilon, frame geometry): DC
removal, raw log energy, pre-emphasis ``x[n] - 0.97 x[n-1]`` (``x[-1] = x[0]``) written by two
slices, the window, then the real FFT of ``fft_length`` points; power spectrum, mel matrix,
``log(max(., eps))``. What it does differently, for speed only:

* the signal is scaled and reflected at its edges into a buffer whose strided view is the frames
  (:func:`_frames`, Lhotse's framing without its three tensor copies), the centred frames are
  written into a second buffer and the pre-emphasised, windowed ones into a zero-padded
  ``(frames, fft_length)`` third, all kept per thread and reused from call to call (no
  allocation, no padding copy);
* the power spectrum and the mel matrix are one product: the FFT's interleaved real and
  imaginary parts, squared in place, times the mel matrix with each row repeated, so
  ``sum_k w_k (re_k^2 + im_k^2)`` is summed by the GEMM;
* that product is taken in bands of :data:`MEL_GROUP` filters, each over the FFT bins its filters
  cover (a triangular filter spans a few bins; the dense product multiplies about 40 zeros for
  every weight).

Equal to the offline features up to float32 summation order (``tests/test_online.py`` compares
them). Configurations it does not cover (dither, power spectra other than the default) and long
inputs (over :data:`~pyspk.features.fbank.BLOCK_FRAMES` frames) go to the offline function.
"""

from __future__ import annotations

import math
import threading
from typing import List, Optional, Tuple

import numpy as np
import torch

from pyspk.features.fbank import BLOCK_FRAMES, INT16_SCALE, FbankConfig, _get_extractor, compute_fbank_energy

MEL_GROUP = 10  # mel filters per band of the mel product
_LOCAL = threading.local()


class _Plan:
    """The mel matrix in bands and the reusable buffers, for one extractor module (one thread's)."""

    def __init__(self, module):
        self.module = module
        win = module.wav2win
        fb2 = module._fb.detach().repeat_interleave(2, dim=0)  # rows re_0, im_0, re_1, im_1, ...
        self.bands: List[Tuple[int, int, torch.Tensor]] = []
        for g0 in range(0, fb2.shape[1], MEL_GROUP):
            w = fb2[:, g0 : g0 + MEL_GROUP]
            rows = torch.nonzero(w.ne(0).any(dim=1)).flatten()
            lo, hi = (int(rows[0]), int(rows[-1]) + 1) if rows.numel() else (0, 1)
            self.bands.append((lo, hi, w[lo:hi].contiguous()))
        self.fft_in = torch.zeros(0, win.pad_length)
        self.centred = torch.empty(0, win._length)
        self.padded = np.empty(0, np.float32)

    def buffers(self, rows: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the zero-padded FFT input, the centred frames), ``rows`` rows each."""
        if self.fft_in.shape[0] < rows:
            self.fft_in = torch.zeros(rows, self.fft_in.shape[1])
            self.centred = torch.empty(rows, self.centred.shape[1])
        return self.fft_in[:rows], self.centred[:rows]


def _frames(wave: np.ndarray, win, scale: float, plan: _Plan) -> Optional[torch.Tensor]:
    """Lhotse's framing (``_get_strided_batch`` with ``snip_edges: false``: the signal reflected by
    ``(L - S) / 2`` samples at its start and as far as the last frame needs at its end) as a
    strided view of the plan's buffer, the signal scaled on the way in; None where Lhotse's own
    framing is kept (``snip_edges``, a signal shorter than its reflections)."""
    n, length, shift = wave.shape[0], win._length, win._shift
    rows = (n + shift // 2) // shift
    left = (length - shift) // 2
    need = (rows - 1) * shift + length
    right = need - left - n
    if win.snip_edges or rows == 0 or n < left or right > n:
        return None
    if plan.padded.shape[0] < need:
        plan.padded = np.empty(need, np.float32)
    x = plan.padded
    np.multiply(wave[: need - left], scale, out=x[left : left + min(n, need - left)])
    if left:
        x[:left] = x[left : 2 * left][::-1]
    if right > 0:
        x[left + n : need] = x[left + n - right : left + n][::-1]
    return torch.from_numpy(x).as_strided((rows, length), (shift, 1))


def _plan(module) -> _Plan:
    plan = getattr(_LOCAL, "plan", None)
    if plan is None or plan.module is not module:
        plan = _LOCAL.plan = _Plan(module)
    return plan


def fbank_energy(wave: np.ndarray, config: FbankConfig) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """:func:`~pyspk.features.fbank.compute_fbank_energy` of ``wave`` at ``config.sample_rate``."""
    module = _get_extractor(config).extractor
    win = module.wav2win
    if win.dither != 0.0 or getattr(module, "use_fft_mag", False) or wave.ndim != 1:
        return compute_fbank_energy(wave, config.sample_rate, config)
    plan = _plan(module)
    with torch.inference_mode():
        frames = _frames(wave, win, INT16_SCALE if config.int16_scale else 1.0, plan)
        if frames is None:
            from lhotse.features.kaldi.layers import _get_strided_batch

            x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
            if config.int16_scale:
                x = x * INT16_SCALE
            frames = _get_strided_batch(x.unsqueeze(0), win._length, win._shift, win.snip_edges)[0]
        rows = frames.shape[0]
        if rows > BLOCK_FRAMES or rows == 0:
            return compute_fbank_energy(wave, config.sample_rate, config)
        fft_in, centred = plan.buffers(rows)
        if win.remove_dc_offset:
            frames = torch.sub(frames, frames.mean(dim=1, keepdim=True), out=centred)
        energy = None
        if win.return_log_energy and win.raw_energy:
            energy = _log_energy(frames, win.energy_floor)
        y = fft_in[:, : win._length]
        c = win.preemph_coeff
        if c != 0.0:
            torch.mul(frames[:, :-1], c, out=y[:, 1:])  # Lhotse's rounding: x - (c x_prev)
            torch.sub(frames[:, 1:], y[:, 1:], out=y[:, 1:])
            torch.sub(frames[:, 0], frames[:, 0] * c, out=y[:, 0])
            y.mul_(win._window)
        else:
            torch.mul(frames, win._window, out=y)
        if win.return_log_energy and not win.raw_energy:
            energy = _log_energy(y, win.energy_floor)
        squares = torch.view_as_real(torch.fft.rfft(fft_in, dim=-1)).square_().view(rows, -1)
        mel = torch.cat([torch.matmul(squares[:, lo:hi], w) for lo, hi, w in plan.bands], dim=1)
        mel = mel.clamp_min_(module._eps).log_()
        return mel.numpy(), (energy.numpy() if energy is not None and config.vad else None)


def _log_energy(frames: torch.Tensor, floor: float) -> torch.Tensor:
    """Lhotse's ``_get_log_energy``: ``log(sum x^2 + 1e-15)``, floored at ``log(floor)``."""
    e = (torch.linalg.vecdot(frames, frames) + 1e-15).log_()
    if floor > 0.0:
        e = e.clamp_min(math.log(floor))
    return e
