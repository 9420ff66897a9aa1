"""Bad input ends in one line on stderr and exit status 2, never a traceback."""


class UsageError(Exception):
    """A problem the user can fix. The message names the problem and the fix."""


EXIT_USAGE = 2
