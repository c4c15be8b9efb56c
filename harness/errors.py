"""The one exception type users see: its message is printed as a single line."""


class HarnessError(Exception):
    """A failure the user can act on (bad input, missing file, unreachable URL, ...).

    The CLI prints ``str(error)`` on one line of stderr and exits with status 1;
    ``--verbose`` adds the traceback.
    """
