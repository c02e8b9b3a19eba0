"""Corpora of the recipe by name (``--corpus NAME``): what stage 0 makes and how.

A corpus is a :class:`Corpus` subclass registered in :data:`CORPORA`. It names its training set,
its test set and the test set's ``trials*`` lists, the folders it is read from (:class:`Root`:
``--<name>-root`` flags of ``run.sh`` and ``local/prepare_corpus.sh``), its own options of
``local/prepare_corpus.sh`` and how it is prepared: as commands, scripts of the recipe
(``local/prepare_*.py``, ``synth/make_synth.py``) with their arguments (:meth:`Corpus.commands`),
or in Python (:meth:`Corpus.prepare`, for corpora registered outside the package), writing
``<data>/<train_set>`` and ``<data>/<test_set>`` as Kaldi data directories. Adding a corpus is
one class and one ``@CORPORA.register("name")`` line; a file named by ``PYSPK_PLUGINS`` adds
one without touching the package (docs/corpora.md, "Adding a corpus").

The recipe asks this registry through ``python -m pyspk.bin.corpus``; this module knows no
paths of its own: script paths are relative to the recipe directory the caller gives.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple

from pyspk.registry import Registry, RegistryError

CORPORA: Registry = Registry("corpus")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # corpus, set, trials and output names
FLAG_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # flags, without the leading --
VALUE_RE = re.compile(r"[A-Za-z0-9_.,:/+=@%-]*")  # option defaults
INPUT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")  # repo-relative files
# Flags that are not a corpus's: the augmentation's folders (run.sh) and the settings every
# preparation gets (local/prepare_corpus.sh, :class:`Context`).
RESERVED_FLAGS = ("musan-root", "rirs-root", "corpus", "data", "seed", "nj", "synth-size", "skip-missing")


class CorpusError(ValueError):
    """A corpus that cannot be prepared (a missing root) or is not well declared."""


@dataclass(frozen=True)
class Root:
    """A folder a corpus is read from, given as ``--<flag> DIR``."""

    flag: str  # e.g. "voxceleb1-root"
    what: str  # what it is, for messages and ``pyspk corpus info``
    script: str = ""  # the local/download_*.sh command line that gets it ("" = none)
    downloads: bool = False  # True: script downloads it; False: script checks and unpacks archives fetched by hand
    into: str = ""  # where script puts it (downloads only)

    @property
    def var(self) -> str:
        return self.flag.replace("-", "_")

    def hint(self) -> str:
        """How to get it, for the one-line error when the flag is missing."""
        if not self.script:
            return self.what
        if self.downloads:
            return f"{self.script} fetches it" + (f" into {self.into}" if self.into else "")
        return f"{self.script} fetches it (see docs/corpora.md)"


@dataclass(frozen=True)
class Option:
    """A corpus's own option of local/prepare_corpus.sh (``--<flag> VALUE``)."""

    flag: str
    default: str
    what: str = ""

    @property
    def var(self) -> str:
        return self.flag.replace("-", "_")


@dataclass
class Context:
    """What a preparation gets: the flags of local/prepare_corpus.sh and the two set dirs."""

    corpus: str
    data: str  # the --data dir, as given
    train_set: str
    test_set: str
    seed: int = 777
    nj: int = 2
    synth_size: str = "default"
    skip_missing: bool = False
    roots: Dict[str, str] = field(default_factory=dict)  # root flag -> folder, in the corpus's order
    options: Dict[str, str] = field(default_factory=dict)  # option flag -> value
    prog: str = "prepare_corpus"

    def dir(self, name: str) -> str:
        return f"{self.data}/{name}"

    @property
    def train_dir(self) -> Path:
        return Path(self.dir(self.train_set))

    @property
    def test_dir(self) -> Path:
        return Path(self.dir(self.test_set))

    def root(self, flag: Optional[str] = None) -> str:
        """The folder given for a root flag (default: the corpus's first)."""
        return self.roots[flag or next(iter(self.roots))]

    def option(self, flag: str) -> str:
        return self.options[flag]

    def note(self, message: str) -> None:
        print(f"{self.prog}: note: {message}", file=sys.stderr)


class Corpus:
    """One corpus of the recipe; subclasses set the class attributes and one of the two methods."""

    train_set: ClassVar[str] = ""
    test_set: ClassVar[str] = ""
    trials: ClassVar[Tuple[str, ...]] = ("trials",)  # the test set's lists (some may depend on the copy)
    roots: ClassVar[Tuple[Root, ...]] = ()
    options: ClassVar[Tuple[Option, ...]] = ()
    inputs: ClassVar[Tuple[str, ...]] = ()  # recipe files the preparation reads (run.sh's stage-0 stamp lists them)
    outputs: ClassVar[Tuple[str, ...]] = ()  # dirs under --data it writes besides the two sets
    conf_dir: ClassVar[str] = ""  # its systems' configs (systems.list, <system>.yaml); "" = conf/<name>

    def commands(self, ctx: Context) -> List[List[str]]:
        """Preparation as commands run in order with Python: a script path relative to the
        recipe directory, then its arguments. Empty: :meth:`prepare` prepares the corpus."""
        return []

    def prepare(self, ctx: Context) -> None:
        """Preparation in Python: write ``ctx.train_dir`` and ``ctx.test_dir`` (wav.scp, utt2spk,
        spk2utt; every list of :attr:`trials` in the test set). They are validated afterwards."""
        raise CorpusError(f"corpus '{ctx.corpus}' defines neither commands() nor prepare()")

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for attr in ("trials", "roots", "options", "inputs", "outputs"):  # one item given alone is a tuple of one
            value = getattr(cls, attr)
            setattr(cls, attr, (value,) if isinstance(value, (str, Root, Option)) else tuple(value))


def get_corpus(name: str) -> Corpus:
    """The registered corpus ``name``, checked; RegistryError (nearest name) when unknown."""
    entry = CORPORA.get(name)
    check_corpus(name, entry.obj)
    return entry.obj()


def check_corpus(name: str, cls) -> None:
    """Refuse a declaration whose names a shell or a data dir could not take as they are."""

    def bad(what: str) -> CorpusError:
        return CorpusError(f"corpus '{name}' ({getattr(cls, '__module__', '?')}): {what}")

    if not isinstance(cls, type) or not issubclass(cls, Corpus):
        raise bad("is not a Corpus subclass")
    if not NAME_RE.fullmatch(name):
        raise bad("the name may hold letters, digits and _ . + - only")
    for what in ("train_set", "test_set"):
        value = getattr(cls, what)
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            raise bad(f"{what} {value!r} must be one directory name of letters, digits and _ . + -")
    if cls.train_set == cls.test_set:
        raise bad(f"train_set and test_set are both '{cls.train_set}'")
    for t in cls.trials:
        if not (isinstance(t, str) and NAME_RE.fullmatch(t) and t.startswith("trials")):
            raise bad(f"trials list {t!r} must be a file name starting with 'trials'")
    for o in cls.outputs:
        if not (isinstance(o, str) and NAME_RE.fullmatch(o)):
            raise bad(f"output {o!r} must be one directory name")
    for i in (*cls.inputs, *([cls.conf_dir] if cls.conf_dir else [])):
        if not (isinstance(i, str) and INPUT_RE.fullmatch(i)) or ".." in i.split("/"):
            raise bad(f"input {i!r} must be a path relative to the recipe directory")
    flags = [(r.flag, True) for r in cls.roots] + [(o.flag, False) for o in cls.options]
    for flag, is_root in flags:
        if not FLAG_RE.fullmatch(flag) or flag in RESERVED_FLAGS or flag.endswith("-root") != is_root:
            raise bad(
                f"flag '--{flag}': root flags end in -root and options do not; lower-case words "
                f"joined by '-', none of {', '.join(RESERVED_FLAGS)}"
            )
    for o in cls.options:
        if not VALUE_RE.fullmatch(o.default):
            raise bad(f"option --{o.flag}: default {o.default!r} holds characters a shell would split")


def all_flags() -> Dict[str, Tuple[str, str]]:
    """Root and option flags of every registered corpus: flag -> (kind, default).
    A flag two corpora share (voxceleb1-root) must mean the same in both."""
    out: Dict[str, Tuple[str, str]] = {}
    for name in CORPORA.names():
        corpus = get_corpus(name)
        for flag, kind, default in [(r.flag, "root", "") for r in corpus.roots] + [
            (o.flag, "option", o.default) for o in corpus.options
        ]:
            if out.setdefault(flag, (kind, default)) != (kind, default):
                raise CorpusError(f"corpus '{name}': --{flag} is declared differently by another corpus")
    return out


def info(name: str) -> Dict[str, object]:
    """What ``pyspk corpus info`` prints: sets, trials, roots, options, inputs, outputs."""
    corpus = get_corpus(name)
    return {
        "corpus": name,
        "doc": (type(corpus).__doc__ or "").strip().split("\n")[0],
        "train_set": corpus.train_set,
        "test_set": corpus.test_set,
        "trials": list(corpus.trials),
        "roots": [
            {
                "flag": r.flag,
                "what": r.what,
                "script": r.script,
                "downloads": r.downloads,
                "into": r.into,
                "hint": r.hint(),
            }
            for r in corpus.roots
        ],
        "options": [{"flag": o.flag, "default": o.default, "what": o.what} for o in corpus.options],
        "inputs": list(corpus.inputs),
        "outputs": list(corpus.outputs),
        "conf_dir": corpus.conf_dir or f"conf/{name}",
        "prepared_by": "commands" if type(corpus).commands is not Corpus.commands else "python",
    }


def check_roots(corpus: Corpus, ctx: Context) -> None:
    """Every root flag given and a directory, in the corpus's order."""
    for r in corpus.roots:
        value = ctx.roots.get(r.flag, "")
        if not value:
            raise CorpusError(f"--{r.flag} is required for --corpus {ctx.corpus}")
        if not Path(value).is_dir():
            raise CorpusError(f"--{r.flag} '{value}' is not a directory")


def prepare(name: str, ctx: Context, recipe_dir) -> int:
    """Stage 0 for one corpus: its commands (scripts under ``recipe_dir``) or its
    :meth:`Corpus.prepare`, then a check of what that wrote. Returns an exit status."""
    from pyspk.queue import ForwardedSignals

    corpus = get_corpus(name)
    check_roots(corpus, ctx)
    Path(ctx.data).mkdir(parents=True, exist_ok=True)
    commands = corpus.commands(ctx)
    if not commands:
        corpus.prepare(ctx)
        check_prepared(corpus, ctx)
        return 0
    recipe = Path(recipe_dir)
    for argv in commands:
        script = recipe / argv[0]
        if not script.is_file():
            raise CorpusError(f"{script} not found")
        with ForwardedSignals() as fwd:
            rc = fwd.start([sys.executable, str(script), *map(str, argv[1:])]).wait()
        if fwd.got:
            return 128 + fwd.got[0]
        if rc:
            return rc
    return 0


def check_prepared(corpus: Corpus, ctx: Context) -> None:
    """The two sets are valid Kaldi data dirs and the test set has every declared trials list."""
    from pyspk.data.kaldi_dir import DataDirError, validate_data_dir

    for d in (ctx.train_dir, ctx.test_dir):
        try:
            validate_data_dir(d)
        except DataDirError as e:
            raise CorpusError(f"corpus '{ctx.corpus}' prepared an invalid data dir: {e}") from None
    missing = [t for t in corpus.trials if not (ctx.test_dir / t).is_file()]
    if missing:
        raise CorpusError(f"corpus '{ctx.corpus}': {ctx.test_dir} has no {missing[0]} (declared in its trials)")


# ----------------------------------------------------------------------------- the recipe's corpora
SKIP = ("--skip-missing",)


@CORPORA.register("synth")
class SynthCeleb(Corpus):
    """SynthCeleb: English and Mandarin speech made on the spot with espeak-ng (docs/synthceleb.md)."""

    train_set, test_set = "synth_train", "synth_test"
    trials = ("trials_en", "trials_cmn", "trials_cross")
    inputs = ("conf/synth.yaml",)
    outputs = ("synth_audio",)
    options = (
        Option(
            "synth-num-train-spk",
            "",
            "training speakers; empty = the --synth-size's own "
            "(bench/bench_scale.py makes the corpus at several sizes)",
        ),
    )

    def commands(self, ctx):
        spk = ctx.option("synth-num-train-spk")
        return [
            [
                "synth/make_synth.py",
                "--out-dir",
                ctx.data,
                "--size",
                ctx.synth_size,
                "--seed",
                ctx.seed,
                "--nj",
                ctx.nj,
                *(["--num-train-spk", spk] if spk else []),
            ]
        ]


@CORPORA.register("speechocean762")
class SpeechOcean762(Corpus):
    """speechocean762 (OpenSLR 101): read English of Mandarin L1 speakers; split when test/ is absent."""

    train_set, test_set = "so762_train", "so762_test"
    trials = ("trials", "trials_female", "trials_male")
    roots = (
        Root(
            "speechocean762-root",
            "the speechocean762 folder (WAVE/, train/, test/)",
            script="local/download_speechocean762.sh --dir downloads",
            downloads=True,
            into="downloads/speechocean762",
        ),
    )
    options = (
        Option(
            "so762-eval-speakers",
            "40",
            "held-out speakers of the train half when the copy has no test/ half (of 125; gender-alternating draw)",
        ),
    )

    def commands(self, ctx):
        root, split = ctx.root(), []
        if not Path(root, "test").is_dir():
            n = ctx.option("so762-eval-speakers")
            ctx.note(
                f"{root} has no test/ half; holding out {n} of its train speakers for evaluation (seed {ctx.seed})"
            )
            split = ["--split-train-speakers", n]
        return [
            [
                "local/prepare_speechocean762.py",
                "--root",
                root,
                "--train-dir",
                ctx.dir(self.train_set),
                "--test-dir",
                ctx.dir(self.test_set),
                "--seed",
                ctx.seed,
                *split,
                *(SKIP if ctx.skip_missing else ()),
            ]
        ]


VOX1_ROOT = Root("voxceleb1-root", "the VoxCeleb1 folder (wav/, veri_test2.txt)", script="local/download_voxceleb.sh")


@CORPORA.register("voxceleb1")
class VoxCeleb1(Corpus):
    """VoxCeleb1: trains on the dev speakers outside the test list, scores VoxCeleb1-O."""

    train_set, test_set = "voxceleb1_dev", "voxceleb1_test"
    trials = ("trials_vox1_o",)
    roots = (VOX1_ROOT,)

    def commands(self, ctx):
        return [
            [
                "local/prepare_voxceleb1.py",
                "--root",
                ctx.root(),
                "--dev-dir",
                ctx.dir(self.train_set),
                "--test-dir",
                ctx.dir(self.test_set),
                "--trial-lists",
                "o",
                *(SKIP if ctx.skip_missing else ()),
            ]
        ]


@CORPORA.register("voxceleb2")
class VoxCeleb2(Corpus):
    """VoxCeleb2 dev for training; VoxCeleb1-O, and -E/-H when their lists are present, for testing."""

    train_set, test_set = "voxceleb2_dev", "voxceleb1_test"
    trials = ("trials_vox1_o",)  # trials_vox1_e, trials_vox1_h when their lists are present
    roots = (
        Root("voxceleb2-root", "the VoxCeleb2 folder (dev/aac/ or a wav tree)", script="local/download_voxceleb.sh"),
        VOX1_ROOT,
    )

    def commands(self, ctx):
        return [
            [
                "local/prepare_voxceleb2.py",
                "--root",
                ctx.root("voxceleb2-root"),
                "--train-dir",
                ctx.dir(self.train_set),
            ],
            [
                "local/prepare_voxceleb1.py",
                "--root",
                ctx.root("voxceleb1-root"),
                "--test-dir",
                ctx.dir(self.test_set),
                "--test-only",
                "--trial-lists",
                "o,e,h",
                *(SKIP if ctx.skip_missing else ()),
            ],
        ]


@CORPORA.register("cnceleb")
class CNCeleb(Corpus):
    """CN-Celeb: trains on CN-Celeb1 dev + CN-Celeb2, scores the CN-Celeb1 evaluation set."""

    train_set, test_set = "cnceleb_train", "cnceleb1_eval"
    trials = ("trials", "trials_avg")
    roots = (
        Root(
            "cnceleb-root",
            "the CN-Celeb1 folder, with CN-Celeb2 beside it when present",
            script="local/download_cnceleb.sh",
        ),
    )
    options = (Option("cnceleb-min-duration", "0", "> 0: merge short training segments to this many seconds"),)

    def commands(self, ctx):
        return [
            [
                "local/prepare_cnceleb.py",
                "--root",
                ctx.root(),
                "--train-dir",
                ctx.dir(self.train_set),
                "--eval-dir",
                ctx.dir(self.test_set),
                "--min-duration",
                ctx.option("cnceleb-min-duration"),
                *(SKIP if ctx.skip_missing else ()),
            ]
        ]


@CORPORA.register("folder")
class Folder(Corpus):
    """Your own data: a folder per speaker, split into training and test speakers (seeded)."""

    train_set, test_set = "folder_train", "folder_test"
    roots = (Root("folder-root", "a folder per speaker: DIR/<speaker>/**/*.wav|flac"),)

    def commands(self, ctx):
        return [
            [
                "local/prepare_folder.py",
                "--root",
                ctx.root(),
                "--train-dir",
                ctx.dir(self.train_set),
                "--test-dir",
                ctx.dir(self.test_set),
                "--seed",
                ctx.seed,
            ]
        ]


__all__ = [
    "CORPORA",
    "Context",
    "Corpus",
    "CorpusError",
    "Option",
    "RegistryError",
    "Root",
    "all_flags",
    "check_corpus",
    "get_corpus",
    "info",
    "prepare",
]
