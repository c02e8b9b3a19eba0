"""The recipe's stages that split their work into queue jobs (:mod:`pyspk.jobs`): fbank
features (:mod:`.fbank`), augmented copies and their features (:mod:`.augment`), x-vector
extraction (:mod:`.extract`). Each is what one ``pyspk`` tool runs (``pyspk.bin``)."""
