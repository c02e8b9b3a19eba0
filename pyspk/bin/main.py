"""``pyspk <tool> [args]``: dispatch to ``python -m pyspk.bin.<tool>``.

Each tool is a small module in this package with a ``main(argv=None)`` function;
``pyspk --help`` lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pyspk.bin


def _tools():
    return sorted(
        m.name
        for m in pkgutil.iter_modules(pyspk.bin.__path__)
        if m.name not in ("main",) and not m.name.startswith("_")
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tools = _tools()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: pyspk TOOL [ARGS...]\n\ntools:\n  " + "\n  ".join(tools))
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in tools:
        import difflib

        near = difflib.get_close_matches(name, tools, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        print(f"pyspk: unknown tool '{argv[0]}'{hint}; tools: {', '.join(tools)}", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"pyspk.bin.{name}")
    rc = mod.main(argv[1:])
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
