"""One training example from audio: crop, augment, fbank, VAD, CMN, crop, SpecAugment.

:class:`ExampleMaker` turns an :class:`~pyspk.online.audio.Audio` and a random generator into a
``(crop_frames, num_mel_bins)`` float32 matrix, the row a :class:`~pyspk.data.dataset.CropBatchDataset`
batch holds for a precomputed utterance:

1. **kind** (clean or an augmentation) drawn first; a speed factor (the sampler's speaker
   identity, or a same-speaker ``sp<f>`` kind) scales the utterance's length;
2. **window**: ``W`` frames of the (perturbed) utterance, ``W = crop_frames`` or, with VAD,
   ``ceil((1 + vad_margin) crop_frames)``, starting at a uniform frame ``s``. The samples
   decoded are those the frames ``[s, s + W)`` of the *whole* utterance's fbank depend on
   (Lhotse framing: frame ``t`` covers ``[t S - (L - S)/2, t S + (L + S)/2)`` for
   ``snip_edges: false``), starting on a frame boundary, plus the reverb margins of
   :meth:`OnlineAugmenter.margins`, plus a resampler margin under speed perturbation. So
   without augmentation the window's fbank *equals* the offline features' frames ``[s, s + W)``.
   An utterance of at most ``W`` frames (or ``scope: utterance``) is taken whole;
3. **augmentation** on the region: speed, reverb (on the margins, then cut), then the additive
   kind with stage 2's recipe drawn for the region's duration;
4. **fbank** with the offline FbankConfig (:func:`pyspk.online.fbank.fbank_energy`: the
   offline extractor's computation with less overhead per call), frames ``[s, s + W)`` kept;
5. **VAD** (Kaldi's energy VAD, :func:`pyspk.features.vad.vad_from_config`) over the window: its
   voiced frames are kept (all frames when it finds none); **CMN** over them
   (:func:`pyspk.features.cmvn.apply_cmn`, whole window or sliding); then
   :func:`pyspk.data.dataset.random_crop` of ``crop_frames`` among them (repeated end to end
   when fewer) and :func:`~pyspk.data.dataset.spec_augment`. With ``scope: utterance`` VAD and
   CMN run over the whole utterance exactly as the offline reader does; with ``scope: crop``
   (the default) the energy threshold and the mean are those of the window, as in every peer
   toolkit that crops before featurising.

Steps 1-2 are :meth:`ExampleMaker.begin` and 3-5 :meth:`ExampleMaker.end`, so that a batch can
decode every view's dry region first and use the other speakers' regions as babble; the views of
one utterance begin together (:meth:`ExampleMaker.begin_views`), so that where their regions
overlap the recording is decoded once.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence

import numpy as np

from pyspk.data.dataset import random_crop, spec_augment
from pyspk.features.cmvn import apply_cmn
from pyspk.features.fbank import FbankConfig, num_frames
from pyspk.features.vad import vad_from_config
from pyspk.online.augment import SPEED_MARGIN, OnlineAugmenter
from pyspk.online.fbank import fbank_energy

# input samples between two views' regions of one recording below which one read covers both:
# about a FLAC block, whose decoding costs less than the seek a second read would make
READ_GAP = 4096


class ExampleMaker:
    """Makes one view's ``(crop_frames, num_mel_bins)`` matrix (module docstring): the training
    ``features`` settings (crop, CMN, VAD, SpecAugment), the FbankConfig and the augmenter."""

    def __init__(
        self,
        fbank: FbankConfig,
        crop_frames: int,
        cmn: bool = True,
        cmn_window: Optional[int] = None,
        vad: bool = True,
        spec_cfg=None,
        augmenter: Optional[OnlineAugmenter] = None,
        scope: str = "crop",
        vad_margin: float = 0.25,
    ):
        self.fbank, self.crop_frames = fbank, int(crop_frames)
        self.cmn, self.cmn_window = cmn, cmn_window
        self.vad = bool(vad and fbank.vad)
        self.spec = spec_cfg if spec_cfg is not None and getattr(spec_cfg, "enabled", False) else None
        self.aug, self.scope = augmenter, scope
        self.window = int(math.ceil(self.crop_frames * (1.0 + vad_margin))) if self.vad else self.crop_frames
        sr = fbank.sample_rate
        self.shift = fbank.frame_shift_samples
        self.length = int(round(sr * fbank.frame_length_ms / 1000.0))
        self.pad_left = 0 if fbank.snip_edges else (self.length - self.shift) // 2
        self.context = -(-self.pad_left // self.shift)  # frames before s the segment starts at
        self._vad_need: dict = {}  # frames -> proportion_threshold x window size, per frame
        self._vad_ones = np.ones(2 * max(0, int(fbank.vad_frames_context)) + 1, np.int32)

    @property
    def feat_dim(self) -> int:
        return self.fbank.num_mel_bins

    # ------------------------------------------------------------------ geometry
    def region(self, n: int, rng: np.random.Generator):
        """(a, b, m): samples ``[a, b)`` to featurise and the first kept frame ``m`` of their fbank,
        for a window drawn in an utterance of ``n`` samples; (0, n, None) for the whole."""
        total = num_frames(n, self.fbank)
        if self.scope == "utterance" or total <= self.window:
            return 0, n, None
        s = int(rng.integers(0, total - self.window + 1))
        a = max(0, (s - self.context) * self.shift)
        m = s - a // self.shift
        b = min(n, a + (m + self.window - 1) * self.shift - self.pad_left + self.length)
        return a, b, m

    # ------------------------------------------------------------------ the example
    def __call__(
        self,
        utt: str,
        audio,
        rng: np.random.Generator,
        speed: Optional[float] = None,
        babble_pool: Optional[Callable[[np.random.Generator], List[str]]] = None,
        out: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """The example of ``utt`` (errors name its table line, the utterance and the source)."""
        return self.end(self.begin(utt, audio, rng, speed, babble_pool), out)

    def begin(
        self,
        utt: str,
        audio,
        rng: np.random.Generator,
        speed: Optional[float] = None,
        babble_pool: Optional[Callable[[np.random.Generator], List[str]]] = None,
    ) -> "View":
        """Phase 1: draw the kind, the window and the recipe; decode the dry region (its margins
        included) and apply speed. ``view.src`` (the region's own samples) can then serve as
        another view's babble before phase 2 (:meth:`end`) augments and featurises it."""
        return self.begin_views(utt, audio, [rng], [speed], [babble_pool])[0]

    def begin_views(
        self,
        utt: str,
        audio,
        rngs: Sequence[np.random.Generator],
        speeds: Sequence[Optional[float]],
        babble_pools: Sequence[Optional[Callable[[np.random.Generator], List[str]]]],
    ) -> List["View"]:
        """:meth:`begin` for several views of one utterance, each with its own generator, speed and
        babble pool: every view draws first, then the samples they need are decoded once where
        their regions overlap or nearly meet (:data:`READ_GAP`), so two crops of one recording
        decode their union, once. The samples are those of separate reads."""
        try:
            with audio:
                plans = [self._plan(utt, audio, *args) for args in zip(rngs, speeds, babble_pools)]
                spans = sorted({(p.c0, p.c1) for p in plans})
                reads = []  # merged [lo, hi) spans and their samples
                for c0, c1 in spans:
                    if reads and c0 <= reads[-1][1] + READ_GAP:
                        reads[-1][1] = max(reads[-1][1], c1)
                    else:
                        reads.append([c0, c1])
                chunks = [(lo, audio.read(lo, hi - lo)) for lo, hi in reads]
            views = []
            for p in plans:
                lo, chunk = next((lo, x) for lo, x in reversed(chunks) if lo <= p.c0)
                views.append(self._fill(p, chunk[p.c0 - lo : p.c1 - lo]))
            return views
        except Exception as e:
            named = _named(e, audio, utt)
            if named is e:
                raise
            raise named from e

    def end(self, v: "View", out: Optional[np.ndarray] = None) -> np.ndarray:
        """Phase 2: reverb or the additive kind, fbank, VAD, CMN, crop, SpecAugment."""
        try:
            return self._end(v, out)
        except Exception as e:
            named = _named(e, v.audio, v.utt)
            if named is e:
                raise
            raise named from e

    def _window(self, utt, audio, rng, speed):
        """The draws before the recipe: (kind, speed factor, input samples, perturbed samples, a, b, m)."""
        kind = self.aug.draw_kind(rng) if self.aug is not None else "clean"
        factor = float(speed) if speed else 1.0
        if kind.startswith("sp"):
            factor, kind = float(kind[2:]), "clean"
        n_in = audio.open()
        n = n_in if factor == 1.0 else int(round(n_in / factor))
        a, b, m = self.region(n, rng)
        return kind, factor, n_in, n, a, b, m

    def source(self, utt: str, audio, rng: np.random.Generator, speed: Optional[float] = None) -> np.ndarray:
        """:attr:`View.src` of the view :meth:`begin` would make with this ``rng``, from the draws
        before the recipe alone (a resumed shard stream rebuilds its babble sources with it)."""
        with audio:
            _, factor, n_in, _, a, b, _ = self._window(utt, audio, rng, speed)
            lo, hi = int(math.floor(a * factor)), min(n_in, int(math.ceil(b * factor)))
            return audio.read(lo, hi - lo)

    def _plan(self, utt, audio, rng, speed, babble_pool) -> "_Plan":
        """A view's draws (kind, window, recipe) and the input samples ``[c0, c1)`` it decodes."""
        aug = self.aug
        kind, factor, n_in, n, a, b, m = self._window(utt, audio, rng, speed)
        recipe = aug.recipe(kind, utt, rng, (b - a) / self.fbank.sample_rate, babble_pool) if kind != "clean" else None
        pre, post = aug.margins(recipe) if aug is not None else (0, 0)
        lo, hi = a - pre, b + post
        if factor == 1.0:
            c0, c1 = max(0, lo), min(n_in, hi)
        else:
            c0 = max(0, int(math.floor(lo * factor)) - SPEED_MARGIN)
            c1 = min(n_in, int(math.ceil(hi * factor)) + SPEED_MARGIN)
        return _Plan(utt, audio, rng, recipe, factor, n_in, a, b, m, c0, c1)

    def _fill(self, p: "_Plan", raw: np.ndarray) -> "View":
        """The view of plan ``p`` from ``raw``, its decoded input samples ``[c0, c1)``: speed applied."""
        a, b, factor = p.a, p.b, p.factor
        if factor == 1.0:
            x, base = raw, p.c0
            src = x[a - base : b - base]
        else:
            src = raw[int(math.floor(a * factor)) - p.c0 : min(p.n_in, int(math.ceil(b * factor))) - p.c0]
            x = self.aug._speed(p.utt, raw, {"factor": factor})
            base = int(round(p.c0 / factor))
        b = min(b, base + x.shape[0])  # a region cut short by the end of the (perturbed) audio
        return View(p.utt, p.audio, p.rng, p.recipe, x, base, a, b, p.m, src)

    def _end(self, v: "View", out) -> np.ndarray:
        cfg, r = self.fbank, v.recipe
        if r is not None and r["kind"] == "reverb":
            y = self.aug.reverb_region(v.x, v.base, v.a, v.b, r)
        else:
            y = v.dry
        if r is not None and r["kind"] != "reverb":
            y = self.aug(v.utt, y, r)
        feats, energy = fbank_energy(y, cfg)
        if v.m is not None:
            feats = feats[v.m : v.m + self.window]
            energy = energy[v.m : v.m + self.window] if energy is not None else None
        return self.finish(feats, energy, v.rng, out)

    def finish(
        self,
        feats: np.ndarray,
        energy: Optional[np.ndarray],
        rng: np.random.Generator,
        out: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """VAD, CMN, the crop and SpecAugment of a window's (or utterance's) fbank (module doc, 5)."""
        if self.vad and energy is not None and feats.shape[0] > 0:
            keep = self._voiced(energy)
            if 0 < keep.size < feats.shape[0]:
                feats = feats.take(keep, axis=0)
        n = feats.shape[0]
        if n == 0:
            raise ValueError("no frames")
        if out is None:
            out = np.empty((self.crop_frames, feats.shape[1]), np.float32)
        if self.cmn and not self.cmn_window and n >= self.crop_frames:
            # apply_cmn then random_crop, fused: the same mean (utterance_mean's float64 column
            # sums, by the reduction ndarray.sum calls, which also show a NaN or inf), subtracted
            # from the cropped rows only
            sums = np.add.reduce(feats.astype(np.float64), axis=0, keepdims=True)
            if not np.logical_and.reduce(np.isfinite(sums), axis=None):
                raise ValueError("features contain NaN or inf")
            start = int(rng.integers(0, n - self.crop_frames + 1))
            np.subtract(feats[start : start + self.crop_frames], (sums / n).astype(feats.dtype), out=out)
        else:
            if not np.isfinite(feats.sum()):
                raise ValueError("features contain NaN or inf")
            if self.cmn:
                feats = apply_cmn(feats, self.cmn_window)
            out[...] = random_crop(feats, self.crop_frames, rng)
        if self.spec is not None:
            s = self.spec
            spec_augment(out, rng, s.time_masks, s.time_width, s.freq_masks, s.freq_width, copy=False)
        return out

    def _voiced(self, energy: np.ndarray) -> np.ndarray:
        """Indices of the voiced frames: :func:`pyspk.features.vad.vad_from_config` with fewer
        array calls (the context counts as one ``convolve``; ``proportion x |window|`` per frame
        kept per length), the same decisions."""
        cfg, T = self.fbank, energy.shape[0]
        c = int(cfg.vad_frames_context)
        if T < 2 * c + 1 or c < 0:
            return np.flatnonzero(vad_from_config(energy, cfg) > 0.5)
        need = self._vad_need.get(T)
        if need is None:
            t = np.arange(T)
            den = np.minimum(t + c + 1, T) - np.maximum(t - c, 0)
            need = self._vad_need[T] = cfg.vad_proportion_threshold * den
        e = energy.astype(np.float64)
        scale = cfg.vad_energy_mean_scale
        mean = np.add.reduce(e) / T  # e.mean(), without its Python wrapper
        threshold = cfg.vad_energy_threshold + (scale * mean if scale != 0 else 0.0)
        num = np.convolve((e > threshold).view(np.int8), self._vad_ones, "same")
        return np.flatnonzero(num >= need)


class _Plan:
    """A view drawn but not decoded: :meth:`ExampleMaker.begin_views` reads ``[c0, c1)`` for it."""

    __slots__ = ("utt", "audio", "rng", "recipe", "factor", "n_in", "a", "b", "m", "c0", "c1")

    def __init__(self, utt, audio, rng, recipe, factor, n_in, a, b, m, c0, c1):
        self.utt, self.audio, self.rng, self.recipe, self.factor = utt, audio, rng, recipe, factor
        self.n_in, self.a, self.b, self.m, self.c0, self.c1 = n_in, a, b, m, c0, c1


class View:
    """A view between :meth:`ExampleMaker.begin` and :meth:`ExampleMaker.end`: the decoded
    samples ``x`` = ``[base, base + len(x))`` of the (speed-perturbed) utterance, the region
    ``[a, b)`` to featurise, the first kept frame ``m`` (None: the whole), the recipe, and
    ``src``: the utterance's own samples under the region (before speed and augmentation), what
    other speakers' babble views mix in."""

    __slots__ = ("utt", "audio", "rng", "recipe", "x", "base", "a", "b", "m", "src")

    def __init__(self, utt, audio, rng, recipe, x, base, a, b, m, src):
        self.utt, self.audio, self.rng, self.recipe = utt, audio, rng, recipe
        self.x, self.base, self.a, self.b, self.m, self.src = x, base, a, b, m, src

    @property
    def dry(self) -> np.ndarray:
        """The region's samples before reverb and additive noise."""
        return self.x[self.a - self.base : self.b - self.base]


def _named(e: Exception, audio, utt: str) -> Exception:
    """``e`` as an EntryError naming the table line, the utterance and the source."""
    from pyspk.online.audio import EntryError

    if isinstance(e, EntryError) or not isinstance(e, (ValueError, OSError, RuntimeError, KeyError)):
        return e
    return EntryError(audio.where, utt, str(audio.source), str(e))
