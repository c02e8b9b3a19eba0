"""The offline fbank (:func:`pyspk.features.fbank.compute_fbank_energy`) with less overhead per call.

The loader featurises a window of a few hundred frames per view, where the fixed cost of the
Lhotse module's calls weighs: its pre-emphasis builds a replicate-padded copy of every frame
and its FFT input a zero-padded copy (two ``torch.nn.functional.pad`` of 3-D tensors, a third
of the time on a 2 s window). :func:`fbank_energy` runs the same steps on the same parameters,
taken from the offline extractor itself (its window, mel matrix, epsilon, frame geometry): DC
removal, raw log energy, pre-emphasis ``x[n] - 0.97 x[n-1]`` (``x[-1] = x[0]``) written by two
slices, the window, then ``rfft(n=fft_length)``, which zero-pads by itself; power spectrum,
mel matrix, ``log(max(., eps))``. Equal to the offline features up to float32 summation order
(``tests/test_online.py`` compares them). Configurations it does not cover (dither, power
spectra other than the default) and long inputs (over :data:`~pyspk.features.fbank.BLOCK_FRAMES`
frames) go to the offline function.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from pyspk.features.fbank import BLOCK_FRAMES, INT16_SCALE, FbankConfig, _get_extractor, compute_fbank_energy


def fbank_energy(wave: np.ndarray, config: FbankConfig) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """:func:`~pyspk.features.fbank.compute_fbank_energy` of ``wave`` at ``config.sample_rate``."""
    module = _get_extractor(config).extractor
    win = module.wav2win
    if win.dither != 0.0 or getattr(module, "use_fft_mag", False) or wave.ndim != 1:
        return compute_fbank_energy(wave, config.sample_rate, config)
    from lhotse.features.kaldi.layers import _get_strided_batch

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with torch.inference_mode():
        if config.int16_scale:
            x = x * INT16_SCALE
        frames = _get_strided_batch(x.unsqueeze(0), win._length, win._shift, win.snip_edges)[0]
        if frames.shape[0] > BLOCK_FRAMES or frames.shape[0] == 0:
            return compute_fbank_energy(wave, config.sample_rate, config)
        if win.remove_dc_offset:
            frames = frames - frames.mean(dim=1, keepdim=True)
        else:
            frames = frames.clone()
        energy = None
        if win.return_log_energy and win.raw_energy:
            energy = _log_energy(frames, win.energy_floor)
        c = win.preemph_coeff
        if c != 0.0:
            y = torch.empty_like(frames)
            torch.mul(frames[:, :-1], c, out=y[:, 1:])  # Lhotse's rounding: x - (c x_prev)
            torch.sub(frames[:, 1:], y[:, 1:], out=y[:, 1:])
            torch.sub(frames[:, 0], frames[:, 0] * c, out=y[:, 0])
            frames = y
        frames.mul_(win._window)
        if win.return_log_energy and not win.raw_energy:
            energy = _log_energy(frames, win.energy_floor)
        spec = torch.fft.rfft(frames, n=win.pad_length, dim=-1)
        power = spec.real.square_() + spec.imag.square()
        mel = torch.matmul(power, module._fb).clamp_min_(module._eps).log_()
        feats = mel.numpy()
        return feats, (energy.numpy().astype(np.float32) if energy is not None and config.vad else None)


def _log_energy(frames: torch.Tensor, floor: float) -> torch.Tensor:
    """Lhotse's ``_get_log_energy``: ``log(sum x^2 + 1e-15)``, floored at ``log(floor)``."""
    e = (frames.square().sum(-1) + 1e-15).log()
    if floor > 0.0:
        e = e.clamp_min(math.log(floor))
    return e
