"""Room impulse responses and reverberation.

Reverberation is ``y = (x * h)[d : d + N]`` computed with ``scipy.signal.fftconvolve``,
where ``h`` is the RIR normalised to unit energy and ``d`` the index of its peak
(direct path, as Kaldi ``wav-reverberate --shift-output``), then rescaled to the
input power.  RIRs come from a RIRS_NOISES folder (``simulated_rirs/{small,medium}room``
as in Kaldi's v2 recipes, else every wav below it) or from a pool of rooms simulated
once with pyroomacoustics (image-source method; Allen & Berkley 1979), seeded, saved
as one ``.npz`` and reused by every job.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
from scipy.signal import fftconvolve


def list_rirs(rirs_root) -> List[str]:
    """RIR wav files of a RIRS_NOISES folder (small and medium simulated rooms if present)."""
    root = Path(rirs_root)
    preferred = [root / "simulated_rirs" / "smallroom", root / "simulated_rirs" / "mediumroom"]
    files = [str(p) for d in preferred if d.is_dir() for p in sorted(d.rglob("*.wav"))]
    if not files:
        files = [str(p) for p in sorted(root.rglob("*.wav"))]
    if not files:
        raise FileNotFoundError(f"{root}: no RIR .wav files found")
    return files


def simulate_rir(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One RIR of a random shoebox room (3-10 m x 3-10 m x 2.5-4 m, RT60 0.2-0.9 s)."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 10), rng.uniform(2.5, 4)])
    rt60 = rng.uniform(0.2, 0.9)
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=min(max_order, 12))
    margin = 0.5
    src = [rng.uniform(margin, d - margin) for d in dims]
    mic = [rng.uniform(margin, d - margin) for d in dims]
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float32)


def simulate_pool(path, num_rooms: int, sample_rate: int, seed: int) -> Path:
    """Simulate ``num_rooms`` RIRs (seeded) into ``path`` (.npz: concatenated ``rirs`` + ``offsets``)."""
    from pyspk.io import atomic_path

    rng = np.random.default_rng(seed)
    rirs = [simulate_rir(rng, sample_rate) for _ in range(num_rooms)]
    offsets = np.cumsum([0] + [len(r) for r in rirs])
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, rirs=np.concatenate(rirs), offsets=offsets, sample_rate=sample_rate)
    return path


def load_pool(path) -> List[np.ndarray]:
    with np.load(path) as z:
        rirs, offsets = z["rirs"], z["offsets"]
    return [rirs[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with the unit-energy RIR, align to its direct path, keep length and power."""
    h = np.asarray(rir, dtype=np.float64)
    h = h / max(np.sqrt(np.sum(h**2)), 1e-12)
    delay = int(np.argmax(np.abs(h)))
    y = fftconvolve(wave.astype(np.float64), h)[delay : delay + wave.shape[0]]
    px, py = np.mean(wave.astype(np.float64) ** 2), np.mean(y**2)
    if py > 0:
        y *= np.sqrt(px / py)
    return y.astype(np.float32)
