"""The bench scripts' entry point: a :class:`core.errors.UserError` prints one line and exits 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run(main: Callable[[], object]) -> None:
    from core.errors import UserError

    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
