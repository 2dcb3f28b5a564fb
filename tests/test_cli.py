"""Tests of mrcnn.cli: one-line errors, exit statuses, crash reports, TensorFlow's start-up log."""

import argparse
import errno
import os
import sys
import warnings

import pytest

from mrcnn import cli
from mrcnn.errors import InputError


def parser_with(run, tensorflow=False):
    parser = cli.ArgumentParser(prog="tool.py")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("go")
    command.add_argument("--size", type=cli.image_size)
    command.add_argument("--count", type=cli.positive_int)
    cli.add_debug_option(command)
    command.set_defaults(run=run, tensorflow=tensorflow)
    return parser


def stderr_lines(capsys):
    return capsys.readouterr().err.splitlines()


def test_a_bad_option_is_one_line_naming_it(capsys):
    parser = parser_with(lambda args: 0)
    for argv, message in [
        (["go", "--size", "100"], "argument --size: '100' is not a multiple of 64 (the network "
                                  "halves the image six times); try 128"),
        (["go", "--size", "9000"], "argument --size: '9000' is not a multiple of 64"),
        (["go", "--size", "16384"], "argument --size: '16384' is larger than 8192 pixels"),
        (["go", "--size", "-64"], "argument --size: '-64' is not a positive integer"),
        (["go", "--count", "x"], "argument --count: 'x' is not a positive integer"),
        (["go", "--colour"], "unrecognized arguments: --colour"),
        (["go", "--cout", "2"], "unrecognized arguments: --cout 2"),
        (["go", "--coun", "2"], "unrecognized arguments: --coun 2"),   # no prefixes of names
        (["went"], "argument command: invalid choice: 'went'"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            cli.run(parser, argv)
        assert exit_.value.code == 2
        [line] = stderr_lines(capsys)
        prog = "tool.py" if message.startswith("argument command") else "tool.py go"
        assert line.startswith(f"{prog}: error: {message}"), line
        assert line.endswith(f"See `{prog} --help`.")


def test_option_types_accept_good_values():
    assert cli.image_size("128") == 128 and cli.image_size("8192") == 8192
    assert cli.positive_int("7") == 7
    assert cli.positive_number("0.25") == 0.25 and cli.positive_number("3") == 3.0
    for text in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{text}' is not a positive number"):
            cli.positive_number(text)


def test_statuses_of_success_results_and_bad_input(capsys):
    assert cli.run(parser_with(lambda args: None), ["go"]) == 0
    assert cli.run(parser_with(lambda args: 1), ["go"]) == 1

    def bad_input(args):
        raise InputError("data/a.json: malformed JSON at line 3.\n  Fix the file there.")

    assert cli.run(parser_with(bad_input), ["go"]) == 2
    assert stderr_lines(capsys) == [
        "tool.py go: error: data/a.json: malformed JSON at line 3. Fix the file there."]


@pytest.mark.parametrize("number, fix", [(errno.ENOSPC, "free some disk space"),
                                         (errno.EACCES, "check its permissions"),
                                         (errno.EROFS, "the disk is read-only")])
def test_a_full_disk_or_denied_permission_is_bad_input_naming_the_file(capsys, number, fix):
    def write(args):
        raise OSError(number, os.strerror(number), "logs/run/mask_rcnn_0001.h5")

    assert cli.run(parser_with(write), ["go"]) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(f"tool.py go: error: logs/run/mask_rcnn_0001.h5: {os.strerror(number)}")
    assert fix in line


def test_a_missing_package_is_bad_input_but_a_missing_mrcnn_module_is_a_bug(capsys, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path))

    def needs(name):
        def run(args):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return run

    assert cli.run(parser_with(needs("tensorflow.python")), ["go"]) == 2
    assert stderr_lines(capsys) == [
        "tool.py go: error: the Python package 'tensorflow' is not installed for "
        f"{sys.executable}. Install the requirements: pip install -r requirements.txt."]
    assert cli.run(parser_with(needs("mrcnn.gone")), ["go"]) == 1
    assert "unexpected error (ModuleNotFoundError" in capsys.readouterr().err


def test_an_unexpected_error_prints_one_line_and_writes_a_report(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path))

    def crash(args):
        {}["missing key"]

    assert cli.run(parser_with(crash), ["go", "--count", "3"]) == 1
    [line] = stderr_lines(capsys)
    assert line.startswith("tool.py go: unexpected error (KeyError: 'missing key'). This is a "
                           "bug in mrcnn: the full report is in ")
    assert line.endswith("; run again with --debug to see the traceback.")
    [report] = os.listdir(tmp_path / "reports")
    assert report.startswith("tool.py-go-") and report.endswith(".txt")
    assert str(tmp_path / "reports" / report) in line
    text = (tmp_path / "reports" / report).read_text()
    assert "command: tool.py go --count 3" in text
    assert "Traceback (most recent call last)" in text and "KeyError: 'missing key'" in text
    assert "packages: mrcnn " in text

    def long_crash(args):
        raise ValueError("x" * 5000)

    assert cli.run(parser_with(long_crash), ["go"]) == 1
    [line] = stderr_lines(capsys)
    assert f"(ValueError: {'x' * cli.SUMMARY_LENGTH}...). This is a bug" in line


def test_debug_shows_the_traceback_and_writes_no_report(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_CACHE", str(tmp_path))

    def crash(args):
        raise RuntimeError("boom")

    def bad_input(args):
        raise InputError("a.json: malformed. Fix it.")

    assert cli.run(parser_with(crash), ["go", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert not (tmp_path / "reports").exists()
    assert cli.run(parser_with(bad_input), ["go", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "tool.py go: error: a.json: malformed. Fix it."


def test_interrupt_exits_130(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert cli.run(parser_with(interrupted), ["go"]) == 130
    assert stderr_lines(capsys) == ["tool.py go: interrupted"]


def test_warnings_are_one_line_during_a_command(capsys):
    def warn(args):
        warnings.warn("a.json: 2 image file(s) missing,\n  skipped: a.png, b.png", UserWarning)

    assert cli.run(parser_with(warn), ["go"]) == 0
    assert stderr_lines(capsys) == ["warning: a.json: 2 image file(s) missing, skipped: a.png, b.png"]


def test_tensorflow_start_up_lines_are_recognized():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795902329.257515   23439 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1795902329.257801   23439 cudart_stub.cc:31] Could not find cuda drivers on "
        "your machine, GPU will not be used.",
        "E0000 00:00:1795902332.730489   23439 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "I0000 00:00:1795902329.299573   23439 cpu_feature_guard.cc:227] This TensorFlow binary "
        "is optimized to use available CPU instructions",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow",
        "W0125 10:31:02.123456    4242 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
    ]
    kept = [
        "/usr/lib/python3/site-packages/h5py/__init__.py:36: UserWarning: h5py is running "
        "against HDF5 1.14",
        "F0000 00:00:1795902332.730489   23439 logging.cc:1] Check failed: fatal error",
        "Traceback (most recent call last):",
    ]
    assert all(cli.TENSORFLOW_LOG_LINE.fullmatch(line) for line in noise)
    assert not any(cli.TENSORFLOW_LOG_LINE.fullmatch(line) for line in kept)


def test_every_source_compiles_without_a_warning():
    """A SyntaxWarning (an invalid escape such as "\\_" in a message) is printed by whichever
    process compiles the file first, a second line before a command's one error line."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = [os.path.join(folder, name)
               for top in ("mrcnn", "samples", "bench", "notebooks", "tests")
               for folder, _, names in os.walk(os.path.join(root, top))
               for name in names if name.endswith(".py")]
    assert len(sources) > 50
    for path in sources:
        with open(path, encoding="utf-8") as f, warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(f.read(), path, "exec")



def test_the_torchvision_worker_without_torch_says_where_it_runs():
    """bench/torchvision_worker.py needs torch, no dependency of mrcnn: run in mrcnn's own
    Python (``--help`` included) it says so in one line instead of a traceback."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed in this Python")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    worker = os.path.join(root, "bench", "torchvision_worker.py")
    result = subprocess.run([sys.executable, worker, "--help"], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No module named 'torch'" in lines[0]
    assert "bench/compare_torchvision.py" in lines[0]
