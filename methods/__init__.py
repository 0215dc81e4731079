"""Methods: one file per method, each registering a strategy and its config with ``METHODS``.

Importing this package imports every module in it, so a new method file registers itself by existing. A method
outside the repository registers itself the same way and is loaded with ``run_suite.py --import my_pkg.my_method``
(or a file path).
"""

import importlib
import pkgutil

from methods.base import METHODS, CILStrategy, MethodConfig  # noqa: F401

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
