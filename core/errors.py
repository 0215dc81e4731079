"""User-facing errors: one line that names the fix, exit code 2, nothing written."""


class UserError(Exception):
    """Bad input from the user (unknown name, missing file, impossible value).

    The message must be one line that says what is wrong and how to fix it; the CLI prints it
    without a traceback and exits with code 2 before anything is written.
    """
