"""Embedding extraction: the encoder applied to features (chunking, length-sorted batches), and
one recording embedded and scored (``pyspk embed``, ``pyspk verify``). The extraction stage
that runs it over a data directory in queue jobs is :mod:`pyspk.stages.extract`."""
