"""Methods: one file per method, each registering a strategy and its config with ``METHODS``.

Importing this package registers every built-in method. A method outside the repository registers itself the
same way and is loaded with ``run_suite.py --import my_pkg.my_method`` (or a file path).
"""

from methods.base import METHODS, CILStrategy, MethodConfig  # noqa: F401
from methods import full_ft, sd_lora  # noqa: F401,E402
