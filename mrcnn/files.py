"""Writing files safely and showing progress: the one place for both.

Every file mrcnn writes (checkpoints, run settings, splash pictures and
videos, evaluation reports, downloads, generated datasets) goes through
:func:`atomic_path` or :func:`atomic_directory`: the content is written under
a temporary name beside the target and renamed over it only when complete, so
an interrupted run leaves the previous file (or nothing), never half a file.
Long loops (detection over a dataset, downloads) report with
:class:`ProgressBar`. Downloads and generated data are cached in
``default_cache_dir()``.
"""

import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile


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
    flushed to disk and renamed over ``path``; on any error it is removed and
    ``path`` is left as it was.

    Example::

        with atomic_path("logs/run/mask_rcnn_0001.h5") as temporary:
            write_hdf5(temporary)
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{stem}.{secrets.token_hex(4)}.partial{extension}")
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
def atomic_directory(path):
    """Yield a temporary folder to fill; rename it to ``path`` when done.

    ``path`` must not exist (FileExistsError otherwise). On error the
    temporary folder and everything in it are removed, so ``path`` either
    does not exist or is complete.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        raise FileExistsError(f"{path} already exists; remove it or choose another folder.")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    try:
        yield temporary
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


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
