"""Thread settings: defaults from the core count, overrides, TensorFlow's pools sized once."""

import subprocess
import sys

import pytest

from mrcnn import threads
from mrcnn.config import Config, ConfigError


@pytest.mark.parametrize("cores, expected", [(1, (1, 1, 1)), (2, (2, 1, 1)), (4, (4, 1, 1)),
                                             (8, (8, 4, 2)), (64, (64, 32, 4))])
def test_defaults_follow_the_core_count(cores, expected):
    assert threads.default_threads(cores) == expected


def test_data_workers_default_and_override(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    assert threads.data_workers() == 4
    assert threads.data_workers(3) == 3


def test_tensorflow_pools_are_sized_once_and_the_environment_wins():
    script = (
        "from mrcnn import threads; import tensorflow as tf\n"
        "print(threads.configure_tensorflow(None, 3))\n"
        "tf.zeros([1]) + 1\n"
        "print(threads.configure_tensorflow(2, 2))\n")
    env = {"TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(1, 3)", "(1, 3)"]
    assert "inter-op pool already has 3 threads; 2 were asked for" in result.stderr


def test_config_rejects_a_thread_count_below_one():
    class Bad(Config):
        NUM_CLASSES = 2
        DATA_WORKERS = 0

    with pytest.raises(ConfigError, match="DATA_WORKERS is 0: give a number of threads >= 1"):
        Bad()
