"""Reading and writing files safely, and showing progress: the one place for each.

Reading: every file that a dataset, an option or a download names goes
through :func:`regular_file` first, which refuses what is not a regular file
(a folder, a device such as ``/dev/zero``, a FIFO: reading them never ends or
blocks) and, for a file inside a dataset folder, a symbolic link whose target
lies outside that folder.

Writing: every file mrcnn writes (checkpoints, run settings, splash pictures
and videos, evaluation reports, downloads, generated datasets) goes through
:func:`atomic_path` or :func:`atomic_directory`: the content is written under
a temporary name beside the target and renamed over it only when complete, so
an interrupted run leaves the previous file (or nothing), never half a file.
A command that writes several files checks its output folder first
(:func:`check_output_folder`) and writes them through :func:`staged_outputs`,
so that a failure leaves the folder as it was, with no empty folder created.

Long loops (detection over a dataset, downloads) report with
:class:`ProgressBar`. Downloads and generated data are cached in
``default_cache_dir()``.
"""

import contextlib
import json
import os
import secrets
import shutil
import stat
import sys
import tempfile

from mrcnn.errors import InputError

# JSON files larger than this are refused before parsing: annotation exports
# of thousands of photos are a few MB, and parsing takes ten times the size.
MAX_JSON_BYTES = 256 * 2**20


class FileError(InputError):
    """A path mrcnn will not read or write; the message names it and the fix.

    Attributes:
        path: the path.
        reason: what is wrong with it, e.g. "no such image".
        fix: what to do; callers that know better may word their own.
    """

    def __init__(self, path, reason, fix=""):
        super().__init__(f"{path}: {reason}." + (f" {fix}" if fix else ""))
        self.path, self.reason, self.fix = path, reason, fix


# Reading -------------------------------------------------------------------

def regular_file(path, folder=None, follow_links=False, what="file"):
    """``path``, after checking that it is a regular file mrcnn may read.

    Args:
        path: the file.
        folder: the folder the file belongs to (a dataset's subset folder),
            or None for a file a user named directly.
        follow_links: accept a file inside ``folder`` whose real location
            (symbolic links resolved) is outside it.
        what: what the file is, for messages ("image", "annotation file", ...).

    Raises:
        FileError: nothing there (or a dangling link), a folder, a device,
            FIFO or socket (reading /dev/zero or a FIFO never ends), or, when
            ``folder`` is given and ``follow_links`` is False, a link out of
            ``folder``.
    """
    path = os.fspath(path)
    give = f"Give {_article(what)} {what} instead."
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileError(path, f"no such {what}", "Check the path.") from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise FileError(path, f"cannot access this {what} ({reason})") from None
    if stat.S_ISDIR(mode):
        raise FileError(path, f"a folder, not {_article(what)} {what}", give)
    if not stat.S_ISREG(mode):
        raise FileError(path, "not a regular file (a device, FIFO or socket), so it is not "
                              "read", give)
    if folder is not None and not follow_links and not is_inside(path, folder):
        raise FileError(path, f"a symbolic link to {os.path.realpath(path)}, outside {folder}, "
                              "so it is not read",
                        "Copy the file into the folder, or allow links out of it "
                        "(follow_links=True; command line: --follow-links).")
    return path


def read_json(path, error_class, exporter, follow_links=False, max_bytes=None):
    """Parse a JSON file that another program wrote (an annotation tool's export).

    The file must be a regular file (``regular_file``; a link out of its own
    folder is refused unless ``follow_links``) of at most
    ``MAX_JSON_BYTES``, UTF-8 text with or without the byte order mark that
    Windows editors add.

    Args:
        path: the file.
        error_class: the ``InputError`` subclass to raise.
        exporter: the program that writes such files, for the advice in
            messages, e.g. "VIA".
        follow_links: accept a symbolic link to a file in another folder.
        max_bytes: the size limit; default ``MAX_JSON_BYTES`` (the MS COCO
            dataset's own files need more: its train2017 instances are 448 MB).

    Raises:
        error_class: the file is missing, refused, too large, unreadable, not
            UTF-8 text or malformed JSON (the message names the line and
            column), or holds what Python's parser refuses (a number of more
            than 4300 digits, nesting too deep).
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise error_class(f"{path}: file not found. Export the annotations from {exporter} and "
                          "save them there.")
    try:
        regular_file(path, os.path.dirname(os.path.abspath(path)), follow_links,
                     what="annotation file")
    except FileError as error:
        raise error_class(str(error)) from None
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    if os.path.getsize(path) > max_bytes:
        raise error_class(f"{path}: larger than {max_bytes // 2**20} MB, which no "
                          f"annotation file is. Export the annotations from {exporter}.")
    try:
        with open(path, encoding="utf-8-sig") as f:  # with or without a byte order mark
            return json.load(f)
    except UnicodeDecodeError as error:
        raise error_class(f"{path}: not a UTF-8 text file ({error.reason}). Export it from "
                          f"{exporter} again.") from None
    except json.JSONDecodeError as error:
        raise error_class(f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: "
                          f"{error.msg}. Fix the file there or export it from {exporter} "
                          "again.") from None
    except (ValueError, RecursionError) as error:
        raise error_class(f"{path}: unreadable JSON ({error}). Export it from {exporter} "
                          "again.") from None
    except OSError as error:
        raise error_class(f"{path}: cannot read the file ({error.strerror or error}). Check "
                          "its permissions.") from None


def _article(noun):
    return "an" if noun[:1] in "aeiou" else "a"


def is_inside(path, folder):
    """Whether ``path``'s real location (symbolic links resolved) is inside ``folder``'s."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base


# Writing -------------------------------------------------------------------

def missing_folders(path):
    """The folders from ``path`` up that do not exist yet, innermost first.

    ``missing_folders("out/a/b")`` is ``[".../out/a/b", ".../out/a"]`` when
    only ``out`` exists: the folders that writing into ``out/a/b`` creates.
    """
    path = os.path.abspath(os.fspath(path))
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def remove_empty_folders(folders):
    """Remove each folder of ``folders`` (innermost first) that exists and is empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


# The endings of JSON, CSV, image and video files, the kinds that commands write into an
# output folder. A folder to be made under such a name ("--output detections.json") is
# taken for a slip: the user meant a file.
OUTPUT_FILE_SUFFIXES = (".json", ".png", ".jpg", ".jpeg", ".csv", ".mp4", ".avi")


def check_output_folder(path, option=None):
    """Check, before any work, that files can be written into folder ``path``.

    Nothing is created: ``path`` may be missing, then its nearest existing
    parent must be a folder that takes new files (tried with a nameless
    temporary file), and its name must not end like a JSON, CSV, image or video
    file (OUTPUT_FILE_SUFFIXES; an existing folder of such a name is accepted).
    ``option`` (e.g. "--output") names the path in messages.

    Returns:
        ``path``.

    Raises:
        FileError: ``path`` or a parent is an existing file, ``path`` is a
            missing folder named like a file, or the folder cannot be
            written to.
    """
    path = os.fspath(path)
    label = f"{option} {path}" if option else path
    stem, suffix = os.path.splitext(path.rstrip(os.sep))
    if suffix.lower() in OUTPUT_FILE_SUFFIXES and not os.path.exists(path):
        raise FileError(label, f"named like a file ({suffix}), but it is a folder to write "
                               "files into", f"Give a folder name, e.g. {stem} (it is created "
                                             "if missing).")
    missing = missing_folders(path)
    existing = os.path.dirname(missing[-1]) if missing else os.path.abspath(path)
    if not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(path) else f"{existing}, a part of it, is "
        raise FileError(label, f"{where}an existing file, not a folder",
                        "Give a folder (it is created if missing).")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise FileError(label, f"cannot write into {existing} ({error.strerror or error})",
                        "Choose a folder you can write to.") from None
    return path


@contextlib.contextmanager
def staged_outputs(folder):
    """Yield a temporary folder for a command's output files; move them into ``folder`` when done.

    The temporary folder is hidden inside ``folder`` (or inside its nearest
    existing parent), on the same disk. When the block succeeds, ``folder``
    is created if missing and every file of the temporary folder is moved
    into it, replacing files of the same name. When it fails, the temporary
    folder is removed and ``folder`` is left as it was (not even created):
    a command that fails half-way leaves no partial output.

    Example::

        with staged_outputs("detections") as staging:
            for ...:
                save(os.path.join(staging, name))
    """
    folder = os.path.abspath(os.fspath(folder))
    missing = missing_folders(folder)
    parent = os.path.dirname(missing[-1]) if missing else folder
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.partial-", dir=parent)
    try:
        yield staging
        os.makedirs(folder, exist_ok=True)
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
    except BaseException:
        remove_empty_folders(missing)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def default_cache_dir():
    """Where mrcnn keeps downloaded weights and generated data: ``$MRCNN_CACHE`` if
    set, else ``~/.cache/mrcnn``."""
    return os.environ.get("MRCNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mrcnn")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write ``path``'s content to; rename it when done.

    The temporary file sits in the same folder (created if needed) and keeps
    ``path``'s extension, so writers that choose the format from the name
    (``savefig``, OpenCV's VideoWriter, h5py) work. On success the file is
    flushed to disk and renamed over ``path``; on any error it is removed, so
    are the folders created for it, and ``path`` is left as it was.

    Example::

        with atomic_path("logs/run/mask_rcnn_0001.h5") as temporary:
            write_hdf5(temporary)
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    created = missing_folders(folder)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{stem}.{secrets.token_hex(4)}.partial{extension}")
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        remove_empty_folders(created)
        raise


def write_atomically(path, write):
    """Call ``write(temporary_path)`` and move the result to ``path``; return ``path``.

    See :func:`atomic_path`.
    """
    with atomic_path(path) as temporary:
        write(temporary)
    return path


def write_text(path, text):
    """Write a str to ``path`` (UTF-8) atomically; return ``path``."""
    def write(temporary):
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return write_atomically(path, write)


def write_json(path, data, indent=1):
    """Write ``data`` as JSON to ``path`` atomically; return ``path``."""
    return write_text(path, json.dumps(data, indent=indent))


@contextlib.contextmanager
def atomic_directory(path, replace=False):
    """Yield a temporary folder to fill; rename it to ``path`` when done.

    ``path`` must not exist (FileExistsError otherwise), unless ``replace``:
    then an existing folder at ``path`` is swapped out only once the new one
    is complete. On error the temporary folder and everything in it are
    removed (and the parent folders created for it), so ``path`` is either as
    it was or complete.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not (replace and os.path.isdir(path)):
        raise FileExistsError(f"{path} already exists; remove it or choose another folder.")
    parent, name = os.path.split(path)
    created = missing_folders(parent)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp's folder is private; ours follows umask
    try:
        yield temporary
        if os.path.isdir(path):
            os.replace(path, temporary + ".old")
            os.replace(temporary, path)
            shutil.rmtree(temporary + ".old")
        else:
            os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        remove_empty_folders(created)
        raise


def _umask():
    """The process's file mode creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ProgressBar:
    """A one-line text progress bar: ``Detecting [=====     ]  50% 12/24``.

    Args:
        total: the count at completion, or None when unknown (the count is
            shown without a bar).
        label: text before the bar.
        unit: "items" shows ``done/total``; "bytes" shows megabytes.
        width: characters of the bar.
        stream: where to draw (default: stderr).

    ``advance(n)`` adds ``n`` and redraws; ``close()`` ends the line. Used as a
    context manager, the line is ended on exit.
    """

    def __init__(self, total, label, unit="items", width=30, stream=None):
        self.total, self.label, self.unit, self.width = total, label, unit, width
        self.stream = stream or sys.stderr
        self.done = 0
        self._closed = False
        self._draw()

    def advance(self, count=1):
        self.done += count
        self._draw()

    def close(self):
        if not self._closed:
            self._closed = True
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _count(self, value):
        return f"{value / 1e6:.1f}" if self.unit == "bytes" else str(value)

    def _draw(self):
        suffix = " MB" if self.unit == "bytes" else ""
        if self.total:
            filled = self.width * min(self.done, self.total) // self.total
            bar = "=" * filled + " " * (self.width - filled)
            percent = 100 * min(self.done, self.total) // self.total
            text = (f"{self.label} [{bar}] {percent:3d}% "
                    f"{self._count(self.done)}/{self._count(self.total)}")
        else:
            text = f"{self.label} {self._count(self.done)}"
        self.stream.write(f"\r{text}{suffix}")
        self.stream.flush()
