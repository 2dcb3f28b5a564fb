"""The shapes sample: the original's toy dataset of squares, circles and triangles.

``ShapesConfig`` and ``ShapesDataset`` live in ``mrcnn.shapes``; this module
keeps them where the original's notebooks import them, in either way::

    from samples.shapes import shapes    # with the repository root on sys.path
    import shapes                        # from this folder (a notebook's working directory)

    config = shapes.ShapesConfig()
    dataset = shapes.ShapesDataset()
    dataset.load_shapes(500, config.IMAGE_SHAPE[0], config.IMAGE_SHAPE[1])
    dataset.prepare()

``train_shapes.ipynb`` beside this file is the tutorial: it trains a model on
these images on a CPU in about ten minutes, saves it, reloads it and measures it.
"""

from mrcnn.shapes import ShapesConfig, ShapesDataset

__all__ = ["ShapesConfig", "ShapesDataset"]
