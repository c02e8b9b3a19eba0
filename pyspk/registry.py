"""Named registries: heads, pair losses, pair weights, balancers, back-ends, encoders, corpora.

A component is chosen by name in a config or on the command line; its registry maps the name
to the object that builds it and to the dataclass that validates its settings block. Adding a
component is one file and one ``@REGISTRY.register("name", Settings)`` line.

Code outside the package registers its components in a module named by ``PYSPK_PLUGINS``
(comma-separated module names, or paths to ``.py`` files); :func:`load_plugins` imports them
once, before any lookup. The variable is inherited by queue jobs and ``torchrun`` workers, so
every process of a recipe sees the same components. Plugins are code the user chose to install
by naming it; nothing read from a data file or a checkpoint is imported.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")
PLUGINS_ENV = "PYSPK_PLUGINS"


class RegistryError(KeyError):
    """An unknown or doubly registered name; the message names the registry and the nearest name."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message is meant to be read
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T  # the class or function that builds the component
    settings: Optional[type] = None  # dataclass of its config block (None: takes no settings)


class Registry(Generic[T]):
    """Name -> :class:`Entry` for one kind of component (``kind`` is used in messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry[T]] = {}

    def register(self, name: str, settings: Optional[type] = None, *, replace: bool = False):
        """Decorator: ``@HEADS.register("aam", AamSettings)`` over the class or factory."""

        def add(obj: T) -> T:
            if name in self._entries and not replace:
                raise RegistryError(
                    f"{self.kind} '{name}' is registered twice "
                    f"({self._entries[name].obj!r} and {obj!r}); pass replace=True to override"
                )
            self._entries[name] = Entry(name, obj, settings)
            return obj

        return add

    def get(self, name: str) -> Entry[T]:
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The message for an unknown ``name``: the nearest registered one, else all of them."""
        near = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'?" if near else f"known: {', '.join(self.names())}"
        return f"unknown {self.kind} '{name}' ({hint})"

    def names(self) -> list:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


_loaded: Dict[str, Any] = {}


def load_plugins(spec: Optional[str] = None) -> None:
    """Import the modules named by ``spec`` (default: ``$PYSPK_PLUGINS``), each once."""
    spec = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    for item in (s.strip() for s in spec.split(",")):
        if not item or item in _loaded:
            continue
        _loaded[item] = None  # set first: a plugin that looks a name up does not recurse
        try:
            if item.endswith(".py"):
                path = Path(item)
                if not path.is_file():
                    raise ImportError(f"{item}: no such file")
                name = f"pyspk_plugin_{path.stem}"
                mod_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(mod_spec)
                sys.modules[name] = module
                mod_spec.loader.exec_module(module)
            else:
                module = importlib.import_module(item)
        except Exception as e:
            del _loaded[item]
            raise ImportError(f"{PLUGINS_ENV}: cannot import plugin '{item}': {e}") from e
        _loaded[item] = module
