"""Install mrcnn: ``pip install -e .``"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# Lines of requirements.txt that only the tests and the notebooks need: extras, not requirements.
TEST_TOOLS = ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel"]
NOTEBOOK_TOOLS = ["jupyter", "ipykernel"]


def requirements():
    """Runtime requirements: requirements.txt without the test and notebook tools."""
    test_only = set(TEST_TOOLS + NOTEBOOK_TOOLS)
    lines = (line.strip() for line in (HERE / "requirements.txt").read_text().splitlines())
    return [line for line in lines
            if line and not line.startswith("#")
            and line.split(">")[0].split("=")[0].split("<")[0].strip() not in test_only]


setup(
    name="mrcnn",
    version="3.0.0",
    description="Mask R-CNN (ResNet-FPN) for instance segmentation on TensorFlow 2 and Keras 3",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["mrcnn", "mrcnn.*"]),
    python_requires=">=3.11",
    install_requires=requirements(),
    extras_require={"test": TEST_TOOLS, "notebooks": NOTEBOOK_TOOLS},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
