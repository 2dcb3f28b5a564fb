"""tf.distribute training on CPU: two logical devices, and two worker processes on localhost.

The runs themselves are in distributed_run.py, started as subprocesses: a
process must split its CPU into logical devices, or join a cluster, before
TensorFlow initializes.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from mrcnn import distribute
from mrcnn.config import ConfigError
from mrcnn.model import MaskRCNN

import distributed_run
from conftest import TinyConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "distributed_run.py")
TIMEOUT = 600

# Both runs sum the same float32 numbers in the same orders: the mirrored run
# enables TensorFlow's deterministic kernels, whose parallel reductions would
# otherwise split their work by the free cores (with other processes on the
# cores, the gaps grew to 3e-3 relative in the losses and 5e-4 in the weights).
# They agree to 1e-6 (relative) and 2e-7. A wrong loss scaling or per-replica
# clipping would change each clipped tensor's step, up to LEARNING_RATE *
# GRADIENT_CLIP_NORM = 0.02, by half.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-6


def script_env(**extra):
    """This environment with the repository first on PYTHONPATH, no TF_CONFIG, and ``extra``."""
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


def run_script(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env or script_env(), cwd=REPO)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    output = tmp_path_factory.mktemp("mirrored")
    run = run_script("mirrored", str(output))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(output / "result.json") as f:
        return json.load(f)


@pytest.mark.slow
def test_two_replicas_train_on_two_logical_devices(mirrored):
    assert mirrored["replicas"] == 2
    assert [device.rsplit(":", 2)[-2:] for device in mirrored["devices"]] == [["CPU", "0"], ["CPU", "1"]]


@pytest.mark.slow
def test_two_replica_losses_match_one_device_on_the_same_images(mirrored):
    """Each step on two replicas = one step on one device with the mean gradient of both images."""
    steps = distributed_run.STEPS
    assert len(mirrored["mirrored_losses"]) == len(mirrored["reference_losses"]) == steps
    for step, (run, reference) in enumerate(zip(mirrored["mirrored_losses"],
                                                mirrored["reference_losses"])):
        for name, value in reference.items():
            assert run[name] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-6), (step, name)
    # The steps trained on real targets: the heads' losses are not all zero.
    assert any(losses["mrcnn_mask_loss"] > 0 for losses in mirrored["reference_losses"])


@pytest.mark.slow
def test_clipping_applies_to_the_summed_gradient(mirrored):
    # Some gradient tensors were clipped: DecaySGD's all-reduce path ran, and
    # the weights still match the one-device run that clips the mean gradient.
    assert mirrored["clipped_tensors"] > 0
    assert mirrored["weights_moved"] > 1e-3
    assert mirrored["weights_vs_reference"] < WEIGHT_ATOL


@pytest.mark.slow
def test_two_replica_checkpoint_loads_into_a_one_device_model(mirrored):
    steps = distributed_run.STEPS
    assert mirrored["checkpoints"] == [f"mask_rcnn_tiny_{epoch:04d}.h5" for epoch in range(1, steps + 1)]
    assert mirrored["checkpoint_vs_mirrored"] == 0.0


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    output = tmp_path_factory.mktemp("multiworker")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen(
                [sys.executable, SCRIPT, "multiworker", str(output)], cwd=REPO, text=True,
                env=script_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT))
        logs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:  # a worker whose peer failed waits for it forever
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    results = []
    for index in range(2):
        with open(output / f"worker_{index}.json") as f:
            results.append(json.load(f))
    return output, results


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes(two_workers, tiny_config, tmp_path):
    output, (chief, worker) = two_workers
    assert chief["replicas"] == worker["replicas"] == 2
    assert len(chief["losses"]) == 1
    assert chief["losses"] == worker["losses"]
    assert chief["weights"] == worker["weights"]

    written = [os.path.relpath(os.path.join(folder, name), output / "logs")
               for folder, _, names in os.walk(output / "logs") for name in names
               if name.endswith(".h5")]
    assert written == [os.path.join(os.path.basename(chief["log_dir"]), "mask_rcnn_tiny_0001.h5")]

    model = MaskRCNN("training", tiny_config, str(tmp_path))
    model.load_weights(os.path.join(output, "logs", written[0]), by_name=True)
    assert distributed_run.weights_digest(model.keras_model) == chief["weights"]


def test_make_strategy_choices(tiny_config):
    import tensorflow as tf

    assert distribute.make_strategy(tiny_config) is tf.distribute.get_strategy()
    mirrored = distribute.make_strategy(tiny_config, "mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == tiny_config.GPU_COUNT == 1
    assert distribute.make_strategy(tiny_config, mirrored) is mirrored
    assert distribute.is_chief(mirrored) and distribute.is_chief(tf.distribute.get_strategy())


def test_make_strategy_errors_say_what_to_change(monkeypatch):
    class FourGpus(TinyConfig):
        GPU_COUNT = 4

    with pytest.raises(ConfigError, match=r"GPU_COUNT is 4 but TensorFlow sees 0 GPU\(s\).*"
                                          r"set GPU_COUNT to at most 1"):
        distribute.make_strategy(FourGpus(), "mirrored")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs the TF_CONFIG environment variable"):
        distribute.make_strategy(TinyConfig(), "multiworker")
    with pytest.raises(ConfigError, match="strategy is 'horovod'"):
        distribute.make_strategy(TinyConfig(), "horovod")


def test_data_generator_samples_do_not_depend_on_the_batch_size(synthetic_dataset, tiny_config):
    """What lets replicas of one image read a single-device run's images: per-position samples."""
    from mrcnn.data import DataGenerator

    pairs = DataGenerator(synthetic_dataset, tiny_config, batch_size=2, seed=4)
    singles = DataGenerator(synthetic_dataset, tiny_config, batch_size=1, seed=4)
    for batch_number in range(3):
        (pair,) = pairs.batch(batch_number)
        halves = [singles.batch(2 * batch_number + i)[0] for i in (0, 1)]
        for array, first, second in zip(pair, *halves):
            np.testing.assert_array_equal(array, np.concatenate([first, second]))
