"""The project's errors: one base class, so a stage or a command prints them as one line.

Any exception derived from CharrnnError is a problem the user can act on (a bad param, a corpus
that cannot be decoded, a model directory that does not hold a model); `charrnn.stage` prints it
as `error: <message>` and exits 1. Anything else is a bug and keeps its (masked) traceback.
"""


class CharrnnError(Exception):
    """A problem with the user's input or environment; the message says what to change."""
