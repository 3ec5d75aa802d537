"""Names a package imports only when first used (a module ``__getattr__``,
PEP 562), so that importing it stays cheap."""

from __future__ import annotations


def lazy_getattr(package: str, table: dict):
    """A module ``__getattr__`` for ``package``: a name in ``table`` is
    imported from the submodule ``table[name]`` when first asked for, then
    kept in the package's namespace."""

    def __getattr__(name):
        if name in table:
            import importlib
            import sys

            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
