"""How a stage or a `charrnn` command ends: one `error:` line and exit 1, no traceback, for
every problem the user can act on; 130 / 143 for Ctrl-C / SIGTERM.

- The project's errors (charrnn.errors.CharrnnError) and the environment's (OSError: a missing
  or unreadable file, a full disk, a read-only directory) print as `error: <message>`.
- Anything else is a bug: its traceback is printed (masked, like every message) and the exit
  status is 1.
- Ctrl-C (SIGINT) and SIGTERM unwind the stack like an error, so every temporary output is
  removed on the way out, then print one line. SIGKILL cannot be caught: there, the
  temp-file-and-rename writes (charrnn.files) are what keep outputs whole.

`install()` sets this up for the whole process, from its first lines (stages/_bootstrap.py, the
CLI), so that even a Ctrl-C during start-up, before `run_stage()`, ends the same way.
"""
from __future__ import annotations

import atexit
import errno
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from charrnn.core.errors import CharrnnError

INTERRUPTED = "interrupted ({how}); outputs left as they were, run `dvc repro` again to continue"


_REMOVE: list[Path] = []  # removed when the process ends (remove_on_exit)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def install(interrupted_message: str = INTERRUPTED) -> None:
    """Handlers for the whole process: SIGTERM as Ctrl-C, an uncaught exception (even one raised
    while modules are still being imported) ends as run_stage() would end it, every log line and
    message masked, TensorFlow's C++ start-up lines hidden, and a temporary directory of its own
    (TMPDIR) that goes when the process does. The handlers come first, before anything else is
    imported: a Ctrl-C may arrive at any moment."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    sys.excepthook = lambda kind, e, tb: _exit_for(e, interrupted_message)
    _private_tmpdir()
    from charrnn.core.quiet import quiet_tensorflow
    from charrnn.core.redact import mask_log_records

    mask_log_records()
    quiet_tensorflow()


def _private_tmpdir() -> None:
    """TensorFlow's autograph, MLflow and the rest write temporary files they remove only at a
    normal interpreter exit, which a signal or an error exit (os._exit) skips: give them a
    directory of this process's own, removed however the process ends (SIGKILL aside)."""
    if os.environ.get("CHARRNN_TMPDIR_OWNER") == str(os.getpid()):
        return  # installed already in this process
    private = tempfile.mkdtemp(prefix="charrnn-tmp-")
    os.environ["TMPDIR"] = tempfile.tempdir = private
    os.environ["CHARRNN_TMPDIR_OWNER"] = str(os.getpid())
    remove_on_exit(private)


def remove_on_exit(path: str | Path) -> None:
    """Remove this file or directory when the process ends, by any way but SIGKILL."""
    if not _REMOVE:
        atexit.register(clean_up)
    _REMOVE.append(Path(path))


def clean_up() -> None:
    while _REMOVE:
        path = _REMOVE.pop()
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def run_stage(main, interrupted_message: str = INTERRUPTED) -> None:
    install(interrupted_message)
    if sys.stdout is None:  # descriptor 1 was closed when Python started (`>&-`): every command writes there
        _leave("error: cannot write to standard output: it is closed (send it to a file or /dev/null instead)", 1)
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - every way out goes through _exit_for
        if isinstance(e, SystemExit):
            raise
        _exit_for(e, interrupted_message)


def _exit_for(e: BaseException, interrupted_message: str) -> None:
    if isinstance(e, KeyboardInterrupt):
        how = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
        _leave(interrupted_message.format(how=how), 143 if isinstance(e, Terminated) else 130)
    elif is_project_error(e) or isinstance(e, OSError):
        _leave(f"error: {describe(e)}", 1)
    else:
        from charrnn.core.redact import format_exception

        _leave(format_exception(e).rstrip("\n") + "\nerror: this is a bug in charrnn; please report it", 1)


def _leave(message: str, status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # it may be what failed (a full disk, a closed pipe), or None
            pass
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # stderr closed too: the exit status says it
        pass
    clean_up()
    os._exit(status)  # no second traceback from atexit handlers or half-torn-down threads


def is_project_error(e: BaseException) -> bool:
    return isinstance(e, CharrnnError)


def describe(e: BaseException) -> str:
    """One masked line for a project or environment error."""
    from charrnn.core.redact import redact

    if isinstance(e, OSError) and not is_project_error(e):
        where = f"{e.filename}: " if e.filename else ""
        reason = e.strerror or str(e) or type(e).__name__
        hint = {errno.ENOSPC: "; free some space and run again", errno.EDQUOT: "; free some space and run again",
                errno.EROFS: "; the file system is read-only", errno.EACCES: "; check the file's permissions",
                errno.EPIPE: ""}.get(e.errno, "")
        return redact(f"{where}{reason}{hint}")
    return redact(str(e))
