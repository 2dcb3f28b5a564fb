"""What ``pip install`` of mrcnn requires: requirements.txt split into the library's needs and
the extras of the tests and the notebooks (setup.py)."""

import importlib.metadata
import os
import re

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_name(requirement):
    """'albumentations>=2.0; extra == "test"' -> 'albumentations'."""
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_install_requires_the_library_s_needs_and_extras_the_test_tools():
    with open(os.path.join(ROOT_DIR, "requirements.txt")) as f:
        listed = {project_name(line) for line in f if line.strip() and not line.startswith("#")}
    requires = importlib.metadata.requires("mrcnn")
    runtime = {project_name(r) for r in requires if "extra ==" not in r}
    test = {project_name(r) for r in requires if re.search(r"extra == .test.", r)}
    notebooks = {project_name(r) for r in requires if re.search(r"extra == .notebooks.", r)}
    tools = {"pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel", "jupyter"}
    assert tools <= listed  # what the README's install line brings for the tests
    assert not runtime & tools, runtime & tools
    assert {"tensorflow", "keras", "numpy", "albumentations", "pycocotools"} <= runtime
    assert runtime | test | notebooks == listed
    assert {"pytest", "pytest-xdist", "nbclient"} <= test and "jupyter" in notebooks


def test_the_python_and_tensorflow_floors_are_the_ones_the_docs_state():
    assert importlib.metadata.metadata("mrcnn")["Requires-Python"] == ">=3.11"
    assert "tensorflow>=2.21" in importlib.metadata.requires("mrcnn")
    with open(os.path.join(ROOT_DIR, "README.md")) as f:
        readme = f.read()
    assert "today's Python (3.11+), TensorFlow (2.21+)" in readme
    assert "Python 3.11 or newer" in readme
    with open(os.path.join(ROOT_DIR, "MIGRATING.md")) as f:
        assert "`mrcnn` runs on TensorFlow 2.21+" in f.read()
