"""The one exception type the command line turns into a clean one-line message.

Anything a user can cause (a bad path, an unknown layer name, weights that are not there) raises
`HandnstError` with a message that says what was wrong and what to do. The CLI prints
`handnst: error: <message>` on stderr and exits with `exit_code`: 2 for bad usage or bad input,
1 for a failure while running. Any other exception is a bug and keeps its traceback under --debug.
"""

USAGE = 2    # the user asked for something impossible: bad option, bad file, unknown name
RUNTIME = 1  # the request was fine but running it failed (NaN loss, out of memory, network)


class HandnstError(Exception):
    def __init__(self, message, exit_code=USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class InputError(HandnstError):
    """Bad input from the user (exit code 2)."""

    def __init__(self, message):
        super().__init__(message, USAGE)


class RunError(HandnstError):
    """A failure while running (exit code 1)."""

    def __init__(self, message):
        super().__init__(message, RUNTIME)
