"""What every command line over mrcnn shares: exit statuses, error lines, crash reports.

A sample's command line builds its parser with :class:`ArgumentParser`, gives
each sub-command a ``run`` function (and ``tensorflow=True`` when it needs
TensorFlow), and hands over to :func:`run`::

    parser = cli.ArgumentParser(prog="pikachu.py")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    cli.add_debug_option(train)
    train.set_defaults(run=command_train, tensorflow=True)
    sys.exit(cli.run(parser))

Exit statuses:

- 0: success (a command may return 1 for a result such as "problems found");
- 2: bad input. Every error the user can fix (``errors.InputError``: a
  missing or malformed file, a refused file, an option value that cannot
  work, an output folder that cannot be written; a full disk or a denied
  permission) prints one line, ``prog command: error: <file or option>:
  <what is wrong>. <the fix>``, and no traceback. Bad options are reported
  the same way by the parser, in one line;
- 1: an unexpected error, that is a bug: one line with the error, the path
  of a report file holding the full traceback (under
  ``$MRCNN_CACHE/reports``), and how to see it (``--debug``);
- 130: interrupted (Ctrl-C).

``--debug`` prints the traceback of any error instead, and shows
TensorFlow's start-up log, which is otherwise hidden (see
:func:`import_tensorflow_quietly`).
"""

import argparse
import datetime
import errno
import importlib.metadata
import os
import platform
import re
import sys
import tempfile
import traceback
import warnings

from mrcnn import files
from mrcnn.errors import InputError

# Image sides the networks accept: multiples of 64 (the FPN halves the image
# six times), up to a size whose anchors still fit in memory.
IMAGE_SIZE_STEP = 64
MAX_IMAGE_SIZE = 8192
# OS errors the user can fix, and how.
ENVIRONMENT_ERRORS = {
    errno.EACCES: "check its permissions, or choose another place",
    errno.EPERM: "check its permissions, or choose another place",
    errno.ENOSPC: "free some disk space and run again",
    errno.EDQUOT: "free some disk space (you are over your quota) and run again",
    errno.EROFS: "the disk is read-only; choose another place",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EEXIST: "a file is where a folder is needed; move it or fix the path",
}
# What TensorFlow logs through absl while it loads and lists its devices:
# "WARNING: All log messages before absl::InitializeLog() ...", then lines
# such as "I0000 00:00:1795902329.257515   23439 port.cc:153] oneDNN custom
# operations are on ..." (the seconds count from 1970 before absl is
# initialized; also cudart_stub.cc, cuda_platform.cc: failed call
# to cuInit, cpu_feature_guard.cc and its "To enable the following
# instructions" continuation).
TENSORFLOW_LOG_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.-]+:\d+\] .*"
    r"|To enable the following instructions: .*")
# FFmpeg's log level AV_LOG_QUIET, given to OpenCV's reader of videos (OPENCV_FFMPEG_LOGLEVEL).
FFMPEG_LOG_QUIET = -8
# Characters of an unexpected error's message shown on its line; the report has it all.
SUMMARY_LENGTH = 200
REPORTED_PACKAGES = ("mrcnn", "tensorflow", "keras", "numpy", "Pillow", "h5py", "scikit-image")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad option in one line (exit status 2).

    ``pikachu.py train: error: argument --image-size: '100' is not a multiple
    of 64; try 128. See `pikachu.py train --help`.`` Sub-command parsers made
    by ``add_subparsers`` are of this class too. An option is never taken
    from a prefix of its name (``--epoch`` is not ``--epochs``), and one the
    command does not know is reported by that command's parser.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self._command_parser(args).error(f"unrecognized arguments: {' '.join(unknown)}")
        return args

    def _command_parser(self, args):
        """The parser of the sub-command ``args`` chose, or this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                parser = action.choices.get(getattr(args, action.dest, None))
                if parser is not None:
                    return parser._command_parser(args)
        return self

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message.rstrip('.')}. See `{self.prog} --help`.\n")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def positive_number(text):
    """argparse type: a finite number > 0 (minutes, a rate)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def image_size(text):
    """argparse type: an image side in pixels, a multiple of 64 up to ``MAX_IMAGE_SIZE``."""
    value = positive_int(text)
    if value % IMAGE_SIZE_STEP:
        nearest = max(IMAGE_SIZE_STEP, round(value / IMAGE_SIZE_STEP) * IMAGE_SIZE_STEP)
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a multiple of {IMAGE_SIZE_STEP} (the network halves the image "
            f"six times); try {nearest}")
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r} is larger than {MAX_IMAGE_SIZE} pixels")
    return value


def add_debug_option(parser):
    """Add ``--debug``: tracebacks for every error, and TensorFlow's start-up log."""
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of any error and TensorFlow's start-up log")


def run(parser, argv=None):
    """Parse ``argv`` and run the chosen command's ``run(args)``; its exit status.

    See the module docstring for the statuses and what is printed. The
    command's ``run`` returns its status (None is 0). When its parser sets
    ``tensorflow=True``, TensorFlow is imported first with
    :func:`import_tensorflow_quietly` (unless ``--debug``).
    """
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    prog = " ".join(filter(None, (parser.prog, getattr(args, "command", None))))
    if not debug:
        # FFmpeg's own lines about a video OpenCV cannot read ("moov atom not found"),
        # which the command's error line replaces. OpenCV reads it when it first opens one.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(FFMPEG_LOG_QUIET))
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_one_line_warning
            if getattr(args, "tensorflow", False) and not debug:
                import_tensorflow_quietly()
            return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every error ends here: a line, a report, a status
        message = error_message(error)
        if debug:
            traceback.print_exc()
        if message is not None:
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 2
        if not debug:
            command_line = [parser.prog, *(sys.argv[1:] if argv is None else argv)]
            report = write_report(error, command_line, prog)
            where = f"the full report is in {report}" if report else "no report could be written"
            summary = one_line(error)
            summary = summary if len(summary) <= SUMMARY_LENGTH else \
                summary[:SUMMARY_LENGTH] + "..."
            print(f"{prog}: unexpected error ({type(error).__name__}: {summary}). This is a bug "
                  f"in mrcnn: {where}; run again with --debug to see the traceback.",
                  file=sys.stderr)
        return 1


def error_message(error):
    """The one-line message of an error the user can fix, or None for a bug.

    Errors the user can fix are ``InputError`` (bad files, options and
    settings), a third-party package that is not installed, and OS errors
    that the user's machine caused (permission denied, disk full, read-only
    disk, a file where a folder is needed), naming the file.
    """
    if isinstance(error, InputError):
        return one_line(error)
    if isinstance(error, ModuleNotFoundError) and error.name and \
            error.name.split(".")[0] != "mrcnn":
        return (f"the Python package {error.name.split('.')[0]!r} is not installed for "
                f"{sys.executable}. Install the requirements: pip install -r requirements.txt.")
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRORS:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}; {ENVIRONMENT_ERRORS[error.errno]}."
    return None


def one_line(message):
    """A message on one line: its lines joined by spaces."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _show_one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {one_line(message)}", file=file or sys.stderr)


def write_report(error, command_line, name):
    """Write the traceback of an unexpected error and the versions in use to a file; its path.

    Args:
        error: the exception.
        command_line: the program and its arguments, as a list.
        name: the command, for the file name (e.g. "pikachu.py train").

    The report goes to ``<cache>/reports/<name>-<time>-<pid>.txt``
    (``files.default_cache_dir()``), else to the system's temporary folder;
    None when neither can be written.
    """
    now = datetime.datetime.now()
    filename = f"{re.sub(r'[^A-Za-z0-9_.]+', '-', name)}-{now:%Y%m%dT%H%M%S}-{os.getpid()}.txt"
    text = "\n".join([
        f"mrcnn error report, {now:%Y-%m-%d %H:%M:%S}",
        f"command: {' '.join(map(str, command_line))}",
        f"python: {platform.python_version()} on {platform.platform()}",
        f"packages: {', '.join(_versions())}",
        "",
        "".join(traceback.format_exception(error)),
    ])
    for folder in (os.path.join(files.default_cache_dir(), "reports"), tempfile.gettempdir()):
        try:
            return files.write_text(os.path.join(folder, filename), text)
        except OSError:
            continue
    return None


def _versions():
    for package in REPORTED_PACKAGES:
        try:
            yield f"{package} {importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            yield f"{package} (not installed)"


def import_tensorflow_quietly():
    """Import TensorFlow with its start-up log hidden; the ``tensorflow`` module.

    TensorFlow 2.21 writes its start-up lines (oneDNN, "Could not find cuda
    drivers", "failed call to cuInit" on a machine without a GPU, ...)
    through absl before absl is initialized, so ``TF_CPP_MIN_LOG_LEVEL``
    does not hide them, and no environment variable does. They are written
    by C++ code to file descriptor 2 while TensorFlow's libraries load and
    its devices are listed, so for that time only the descriptor points at a
    temporary file; afterwards every captured line that is not such a log
    line (a Python warning, a fatal error) is written to stderr. Later
    messages follow ``TF_CPP_MIN_LOG_LEVEL``, set to 3 unless already set:
    TensorFlow's C++ code then logs only fatal errors (its other "errors"
    are notes such as "oneDNN supports DT_INT32 only on platforms with
    AVX-512" at the first training step; real errors reach Python as
    exceptions).

    When TensorFlow was imported before, its devices may not have been
    listed yet: they are listed here, with the same capture.

    Command lines show the whole log with ``--debug``, which leaves
    TensorFlow's defaults alone, or choose a level with
    ``TF_CPP_MIN_LOG_LEVEL`` (0 shows everything after the start-up lines).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if line and not TENSORFLOW_LOG_LINE.fullmatch(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
    return tf
