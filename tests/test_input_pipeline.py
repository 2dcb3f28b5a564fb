"""The tf.data pipeline that feeds training: same batches as the DataGenerator, in order."""

import numpy as np
import pytest
import tensorflow as tf

from mrcnn import data, input_pipeline


@pytest.fixture(scope="module")
def generator(synthetic_dataset, tiny_config):
    return data.DataGenerator(synthetic_dataset, tiny_config, shuffle=True, seed=5, steps=3)


def test_batches_are_the_generators_from_the_first_one_on_in_order(generator):
    meter = input_pipeline.PipelineMeter(workers=2)
    dataset = input_pipeline.batches(generator, first_step=4, meter=meter)
    for number, (inputs,) in zip(range(4, 9), dataset):
        (expected,) = generator.batch(number)
        assert len(inputs) == len(expected) == 7
        for tensor, array in zip(inputs, expected):
            assert tensor.dtype == tf.as_dtype(array.dtype) and tensor.shape == array.shape
            np.testing.assert_array_equal(tensor.numpy(), array)
    images, seconds = meter.snapshot()
    assert images >= 5 * generator.batch_size and seconds > 0
    # Batch index i of epoch e is stream batch e * steps + i.
    generator.epoch = 2
    np.testing.assert_array_equal(generator[1][0][1], generator.batch(2 * 3 + 1)[0][1])
    generator.epoch = 0


def test_each_batch_is_built_once(synthetic_dataset, tiny_config):
    """The example batch that gives the shapes is served as the first element, not rebuilt."""
    generator = data.DataGenerator(synthetic_dataset, tiny_config, shuffle=True, seed=5, steps=3)
    built = []
    batch = generator.batch
    generator.batch = lambda number: built.append(number) or batch(number)
    meter = input_pipeline.PipelineMeter(workers=1)
    for (inputs,), number in zip(input_pipeline.batches(generator, first_step=2, meter=meter),
                                 range(2, 5)):
        np.testing.assert_array_equal(inputs[0].numpy(), batch(number)[0][0])
    assert built[:3] == [2, 3, 4] and len(set(built)) == len(built)
    assert meter.snapshot()[0] >= 3 * generator.batch_size


def test_a_workers_error_is_raised_as_itself_with_the_image_named(synthetic_dataset, tiny_config):
    class Broken(type(synthetic_dataset)):
        def load_mask(self, image_id):
            raise ValueError("this mask is broken")

    broken = Broken()
    broken.load_synthetic(2, 128, 128, seed=1)
    broken.prepare()
    meter = input_pipeline.PipelineMeter(workers=1)
    generator = data.DataGenerator(broken, tiny_config, steps=2)
    with pytest.raises(ValueError, match="this mask is broken"):
        input_pipeline.batches(generator, meter=meter)  # the first batch gives the signature
    dataset = input_pipeline.batches(data.DataGenerator(synthetic_dataset, tiny_config, steps=2))
    assert next(iter(dataset))[0][0].shape == (1, 128, 128, 3)

    class BrokenLater(type(synthetic_dataset)):
        calls = 0

        def load_mask(self, image_id):
            BrokenLater.calls += 1
            if BrokenLater.calls > 1:
                raise ValueError("this mask is broken")
            return super().load_mask(image_id)

    later = BrokenLater()
    later.load_synthetic(2, 128, 128, seed=1)
    later.prepare()
    dataset = input_pipeline.batches(data.DataGenerator(later, tiny_config, steps=2), meter=meter)
    with pytest.raises(tf.errors.OpError) as carried:
        list(dataset.take(3))
    with pytest.raises(ValueError, match="this mask is broken") as error:
        input_pipeline.reraise(carried.value, None, meter)
    assert "While loading image" in " ".join(error.value.__notes__)
    with pytest.raises(tf.errors.OpError):  # no worker error kept: the error itself
        input_pipeline.reraise(carried.value, input_pipeline.PipelineMeter(1))


def test_throughput_report_prints_the_step_rate_beside_the_pipelines(capsys):
    meter = input_pipeline.PipelineMeter(workers=2)
    report = input_pipeline.ThroughputReport(meter, batch_size=2)
    meter.add(images=4, seconds=1.0)  # before the epoch: not counted
    report.on_epoch_begin(0)
    for step in range(3):
        meter.add(images=2, seconds=0.25)
        report.on_train_batch_end(step)
    report.on_epoch_end(0)
    (entry,) = report.history
    assert entry["steps"] == 3 and entry["epoch"] == 1
    assert entry["pipeline_images_per_s"] == pytest.approx(6 / 0.75 * 2)
    assert entry["trained_images_per_s"] == pytest.approx(6 / entry["seconds"])
    assert "Epoch 1: 3 steps in" in capsys.readouterr().out
