"""MUSAN (Snyder, Chen & Povey 2015, arXiv:1510.08484) through Lhotse's recipe.

Returns, per part (``noise``, ``music``, ``speech``), the (path, duration) of every
recording found by :func:`lhotse.recipes.prepare_musan`.
"""

from __future__ import annotations

from typing import Dict, List, Tuple


def musan_sources(musan_root) -> Dict[str, List[Tuple[str, float]]]:
    from lhotse.recipes import prepare_musan

    manifests = prepare_musan(musan_root, parts=("music", "speech", "noise"))
    out: Dict[str, List[Tuple[str, float]]] = {}
    for part, m in manifests.items():
        out[part] = sorted((rec.sources[0].source, float(rec.duration)) for rec in m["recordings"])
        if not out[part]:
            raise FileNotFoundError(f"{musan_root}/{part}: no MUSAN recordings found")
    return out
