"""Weight files: the Keras-2 by-name HDF5 layout, downloads and checkpoints.

The original Mask R-CNN saved its weights with Keras 2, and every file people
trained with it (the released ``mask_rcnn_coco.h5`` included) has this layout:

- root attribute ``layer_names``: the model's top-level layer names as bytes,
  in model order, weightless layers (inputs, activations, ...) included;
- root attributes ``backend`` and ``keras_version``;
- one group per layer, with attribute ``weight_names``, e.g.
  ``[b"res2a_branch2a/kernel:0", b"res2a_branch2a/bias:0"]`` (BatchNorm:
  gamma, beta, moving_mean, moving_variance);
- each weight a dataset at ``<layer>/<weight name>``.

A nested model (``rpn_model``) is one group whose weight names are those of
its sublayers (``rpn_conv_shared/kernel:0``, ...). A ``TimeDistributed``
layer is named by the wrapper (``mrcnn_class_conv1/kernel:0``). Full-model
saves keep the same layout under a ``model_weights`` group.

This module reads and writes that layout with h5py, so the original's files
load into this port and the checkpoints this port writes load into the
original. It also fetches the COCO and ImageNet weight files. Run folders
and their checkpoints are :mod:`mrcnn.runs`; the callback that writes a
checkpoint each epoch is ``training.CheckpointSaver``.
"""

import contextlib
import dataclasses
import logging
import os
import re
import urllib.request
import zipfile

import h5py
import keras
import numpy as np

from mrcnn import files
from mrcnn.errors import InputError

COCO_WEIGHTS_URL = (
    "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5")
IMAGENET_WEIGHTS_URL = (
    "https://github.com/fchollet/deep-learning-models/releases/download/v0.2/"
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")

# Layers whose weight shapes depend on NUM_CLASSES: exclude them when loading
# weights trained with another number of classes (e.g. COCO's 81).
CLASS_SPECIFIC_LAYERS = ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask")

logger = logging.getLogger(__name__)


class DownloadError(OSError):
    """A weights file could not be downloaded; the message says where to put it."""


# Layout mapping ------------------------------------------------------------

def layer_weight_names(layer):
    """The file weight name of each weight variable of a Keras layer.

    Args:
        layer: a Keras layer or a nested ``keras.Model`` (e.g. ``rpn_model``).

    Returns:
        list of ``(weight_name, variable)`` in the layer's weight order
        (kernel before bias; BatchNorm gamma, beta, moving_mean,
        moving_variance). Plain layers and wrappers such as ``TimeDistributed``
        give ``"<layer name>/<variable name>:0"``: the wrapper's name, not the
        auto-named inner layer's. A nested model gives its sublayers' names
        (``"rpn_conv_shared/kernel:0"``), as Keras 2 wrote them.
    """
    if isinstance(layer, keras.Model):
        return [entry for sublayer in layer.layers for entry in layer_weight_names(sublayer)]
    return [(f"{layer.name}/{variable.name}:0", variable) for variable in layer.weights]


def model_layers(keras_model):
    """Top-level layers of a model, or of the model it wraps (``inner_model``)."""
    return getattr(keras_model, "inner_model", keras_model).layers


# Writing -------------------------------------------------------------------

def save_weights(keras_model, filepath):
    """Write a model's weights to ``filepath`` in the Keras-2 by-name layout.

    The file is written to a temporary file in the same folder, flushed to
    disk, then renamed over ``filepath``: an interrupted run leaves either the
    previous file or the complete new one, never a truncated file.
    """
    layers = model_layers(keras_model)
    with files.atomic_path(filepath) as temp_path, h5py.File(temp_path, "w") as f:
        f.attrs["layer_names"] = _encode_names(layer.name for layer in layers)
        f.attrs["backend"] = keras.backend.backend().encode("utf8")
        f.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer in layers:
            _write_layer(f.create_group(layer.name), layer)


class Keras2WeightsModel(keras.Model):
    """A ``keras.Model`` whose ``save_weights`` writes this layout for a plain ``.h5`` name.

    Keras 3 saves weights only to ``.weights.h5`` files, in its own layout;
    the original's code calls ``model.keras_model.save_weights("name.h5")``
    and expects the Keras-2 layout that ``load_weights(..., by_name=True)``
    reads. Names ending in ``.h5`` or ``.hdf5`` (but not ``.weights.h5``) get
    that layout (``save_weights`` above, atomically); other names keep
    Keras 3's behaviour.
    """

    def save_weights(self, filepath, overwrite=True, **kwargs):
        path = os.fspath(filepath)
        if not path.endswith((".h5", ".hdf5")) or path.endswith(".weights.h5"):
            return super().save_weights(filepath, overwrite=overwrite, **kwargs)
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} exists and overwrite=False: choose another name.")
        save_weights(self, path)
        return None


def _write_layer(group, layer):
    entries = layer_weight_names(layer)
    names = [name for name, _ in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Layer {layer.name!r} has several weights named {', '.join(duplicates)}; "
            "the Keras-2 layout needs one name per weight within a layer.")
    group.attrs["weight_names"] = _encode_names(names)
    for name, variable in entries:
        group.create_dataset(name, data=variable.numpy())


def _encode_names(names):
    return np.array([name.encode("utf8") for name in names], dtype="S")


# Reading -------------------------------------------------------------------

@dataclasses.dataclass
class LoadResult:
    """What ``load_weights`` did, layer by layer (top-level layer names)."""

    filepath: str
    loaded: list      # model layers whose weights were set from the file
    missing: list     # model layers with weights that the file lacks: unchanged
    unused: list      # file layers with weights that the model lacks: ignored
    excluded: list    # model layers skipped because of ``exclude``: unchanged
    skipped: list = dataclasses.field(default_factory=list)  # ``skip_mismatched`` layers whose
    # shapes differ in the file: unchanged

    def __repr__(self):
        """One line: the count of loaded layers and the names of the others (a notebook shows it)."""
        others = ", ".join(f"{field}={getattr(self, field)!r}"
                           for field in ("missing", "unused", "excluded", "skipped"))
        return f"LoadResult({self.filepath!r}, loaded {len(self.loaded)} layers, {others})"


class WeightsError(InputError):
    """A weights file or choice that cannot be used; the message names it and the fix."""


class WeightShapeError(WeightsError):
    """Weights of a file whose shapes differ from the model's.

    Attributes:
        filepath: the file.
        mismatches: [(layer name, weight name, shape in the file, shape in
            the model)].

    ``detail``, when given, is a last line of the message (e.g. a checkpoint's settings
    that differ from the model's).
    """

    def __init__(self, filepath, mismatches, detail=None):
        message = _shape_mismatch_message(filepath, mismatches)
        super().__init__(message if detail is None else f"{message}\n{detail}")
        self.filepath, self.mismatches = filepath, mismatches

    def summary(self, limit=3):
        """One line: the layers that differ, with the shapes of the first ``limit``."""
        layers = list(dict.fromkeys(layer for layer, _, _, _ in self.mismatches))
        shown = [f"{layer} {name.split('/')[-1]} is {file_shape} in the file, {model_shape} in "
                 "the model" for layer, name, file_shape, model_shape in self.mismatches[:limit]]
        more = len(self.mismatches) - limit
        return (f"weight shapes differ in {len(layers)} layer(s) ({'; '.join(shown)}"
                f"{f'; and {more} more' if more > 0 else ''})")


def load_weights(keras_model, filepath, by_name=False, exclude=None, skip_mismatched=()):
    """Load a Keras-2 HDF5 weights file (the original's or ours) into a model.

    Args:
        keras_model: the ``keras.Model`` (or a model wrapping it as ``inner_model``).
        filepath: the .h5 file.
        by_name: match model and file layers by name. Otherwise pair the
            model's layers that have weights with the file's, in order (their
            counts must be equal).
        exclude: names of model layers to leave unchanged, e.g.
            ``CLASS_SPECIFIC_LAYERS`` for a model with another class count.
            As in the original, giving ``exclude`` implies ``by_name=True``.
        skip_mismatched: names of model layers to leave unchanged when their
            shapes in the file differ (e.g. ``CLASS_SPECIFIC_LAYERS`` when the
            class count may differ); loaded when they match.

    Within a layer, weights are matched by name (``kernel``, ``bias``,
    ``gamma``, ..., and for a nested model ``<sublayer>/kernel``), or, when the
    file's names differ (e.g. Keras 1's ``conv1_W``), in the file's
    ``weight_names`` order. All shapes are checked before any value is set.

    Returns:
        a ``LoadResult``. Model layers missing from the file, and file layers
        the model lacks, are also logged as warnings.

    Raises:
        FileNotFoundError: no file at ``filepath``.
        WeightsError (a ValueError): the file is not in this layout, is
            damaged (missing or non-numeric weights, NaN or infinite values),
            or weight counts differ in layers that ``exclude`` and
            ``skip_mismatched`` do not cover; WeightShapeError (a
            WeightsError) when shapes differ there.
    """
    filepath = os.fspath(filepath)
    weighted_layers = [layer for layer in model_layers(keras_model) if layer.weights]
    with _open_layout(filepath) as group:
        file_layers = _read_weighted_layers(group, filepath)
        if by_name or exclude:
            pairs, result = _pair_by_name(weighted_layers, file_layers, set(exclude or ()),
                                          filepath)
        else:
            pairs, result = _pair_by_order(weighted_layers, file_layers, filepath)
        assignments, result.skipped = _plan_assignments(group, pairs, filepath,
                                                        set(skip_mismatched))
        result.loaded = [name for name in result.loaded if name not in result.skipped]
    for variable, value in assignments:
        variable.assign(value)
    _log_result(result)
    return result


def check_weights_file(filepath):
    """Raise WeightsError unless ``filepath`` is a complete, undamaged weights file.

    Reads the whole file: the Keras-2 layout (``layer_names``, a group per
    layer, ``weight_names``), then every weight, which must be a numeric
    array that reads to its end without NaN or infinite values. Shapes can
    only be compared with a model's, when loading (``load_weights``).
    Commands call it before they build a model, so that a bad file stops
    them early.

    Raises:
        FileNotFoundError: no file at ``filepath``.
        WeightsError: the message names the file, what is wrong and the fix.
    """
    filepath = os.fspath(filepath)
    with _open_layout(filepath) as group:
        for layer_name, weight_names in _read_weighted_layers(group, filepath).items():
            for weight_name in weight_names:
                _read_weight(group[layer_name], weight_name, filepath)


def is_weights_file(filepath):
    """True if ``filepath`` is a complete HDF5 file in the Keras-2 layout."""
    try:
        with _open_layout(os.fspath(filepath)):
            return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _open_layout(filepath):
    """Yield the HDF5 group holding ``layer_names`` (the root, or ``model_weights``)."""
    if not os.path.exists(filepath):
        raise FileNotFoundError(
            f"Weights file not found: {filepath}. Pass the path of an existing .h5 file; "
            "get the COCO weights with mrcnn.weights.get_coco_weights() (--weights=coco), "
            "the ImageNet ones with get_imagenet_weights() (--weights=imagenet), or the "
            "last checkpoint with find_last_checkpoint() (--weights=last).")
    if zipfile.is_zipfile(filepath):
        raise WeightsError(
            f"{filepath} is a Keras 3 '.keras' archive (zip), not a Keras-2 HDF5 weights "
            "file. Load it with keras.saving.load_model(), or write weights for this "
            "project with mrcnn.weights.save_weights().")
    if not h5py.is_hdf5(filepath):
        raise WeightsError(
            f"{filepath} is not an HDF5 file (another format, or a truncated download): "
            "delete it and get the file again.")
    try:
        f = h5py.File(filepath, "r")
    except OSError as error:
        raise WeightsError(
            f"{filepath} is a damaged HDF5 file ({error}), e.g. a truncated download or an "
            "interrupted copy: delete it and get the file again.") from None
    with f:
        if _has_layer_names(f):
            yield f
        elif "model_weights" in f and _has_layer_names(f["model_weights"]):
            yield f["model_weights"]
        else:
            raise WeightsError(
                f"{filepath} is an HDF5 file but not in the Keras-2 by-name layout (no "
                "'layer_names' attribute). Keras 3 '.weights.h5' files, written by "
                "model.save_weights(), load with keras_model.load_weights() into the same "
                "architecture only; mrcnn.weights.save_weights() writes the portable layout.")


def _has_layer_names(group):
    return "layer_names" in group.attrs or "layer_names0" in group.attrs


def _read_names(attributes, name, filepath):
    """A list of str from a bytes-array attribute, also when Keras 2 split it
    into chunks ``name0``, ``name1``, ... (attributes larger than 64 KB)."""
    chunks = [name]
    if name not in attributes:
        chunks = []
        while f"{name}{len(chunks)}" in attributes:
            chunks.append(f"{name}{len(chunks)}")
    values = []
    for chunk in chunks:
        value = attributes[chunk]
        if not (isinstance(value, np.ndarray) and value.ndim == 1 and
                all(isinstance(v, (bytes, str)) for v in value)):
            raise WeightsError(f"{filepath}: the attribute {name!r} is not a list of names: "
                               "the file is damaged or not a weights file; get it again.")
        values.extend(value)
    try:
        return [value.decode("utf8") if isinstance(value, bytes) else value for value in values]
    except UnicodeDecodeError:
        raise WeightsError(f"{filepath}: the attribute {name!r} holds names that are not UTF-8 "
                           "text: the file is damaged; get it again.") from None


def _read_weighted_layers(group, filepath):
    """{layer name: [weight name, ...]} for the file's layers that have weights, in order.

    Every listed layer must be a group holding each of its weights as a
    numeric dataset; WeightsError names the first that is not.
    """
    layers = {}
    for layer_name in _read_names(group.attrs, "layer_names", filepath):
        layer = group.get(layer_name)
        if not isinstance(layer, h5py.Group):
            raise WeightsError(
                f"{filepath} lists layer {layer_name!r} in 'layer_names' but has no group "
                "for it: the file is damaged; get it again.")
        weight_names = _read_names(layer.attrs, "weight_names", filepath)
        for weight_name in weight_names:
            weight = layer.get(weight_name)
            if not isinstance(weight, h5py.Dataset) or weight.dtype.kind not in "fiu":
                raise WeightsError(
                    f"{filepath}: layer {layer_name!r} lists the weight {weight_name!r} but "
                    "holds no numeric array under that name: the file is damaged; get it again.")
        if weight_names:
            layers[layer_name] = weight_names
    return layers


def _pair_by_name(weighted_layers, file_layers, exclude, filepath):
    model_names = {layer.name for layer in weighted_layers}
    pairs, loaded, missing, excluded = [], [], [], []
    for layer in weighted_layers:
        if layer.name in exclude:
            excluded.append(layer.name)
        elif layer.name in file_layers:
            pairs.append((layer, layer.name, file_layers[layer.name]))
            loaded.append(layer.name)
        else:
            missing.append(layer.name)
    unused = [name for name in file_layers if name not in model_names]
    return pairs, LoadResult(filepath, loaded, missing, unused, excluded)


def _pair_by_order(weighted_layers, file_layers, filepath):
    if len(weighted_layers) != len(file_layers):
        raise WeightsError(
            f"{filepath} has {len(file_layers)} layers with weights and the model has "
            f"{len(weighted_layers)}, so they cannot be paired in order: load by name "
            "(by_name=True) to match layers by their names.")
    pairs = [(layer, file_layer, weight_names)
             for layer, (file_layer, weight_names) in zip(weighted_layers, file_layers.items())]
    return pairs, LoadResult(filepath, [layer.name for layer in weighted_layers], [], [], [])


def _plan_assignments(group, pairs, filepath, skip_mismatched):
    """([(variable, value)] for every paired layer, [skipped layer names]).

    Layers in ``skip_mismatched`` whose shapes differ are skipped whole; one
    error lists every other layer whose weight count or shapes differ.
    """
    assignments, skipped, count_problems, shape_problems = [], [], [], []
    for layer, file_layer, file_weight_names in pairs:
        entries = layer_weight_names(layer)
        if len(entries) != len(file_weight_names):
            if layer.name in skip_mismatched:
                skipped.append(layer.name)
                continue
            count_problems.append(
                f"{layer.name}: {len(entries)} weights in the model "
                f"({', '.join(name for name, _ in entries)}), {len(file_weight_names)} in "
                f"the file ({', '.join(file_weight_names)})")
            continue
        matched = _match_weight_names(layer.name, [name for name, _ in entries], file_weight_names)
        layer_assignments, layer_problems = [], []
        for (name, variable), file_name in zip(entries, matched):
            value = _read_weight(group[file_layer], file_name, filepath)
            if tuple(value.shape) != tuple(variable.shape):
                layer_problems.append((layer.name, name, value.shape, tuple(variable.shape)))
            else:
                layer_assignments.append((variable, value))
        if layer_problems and layer.name in skip_mismatched:
            skipped.append(layer.name)
        else:
            assignments += layer_assignments
            shape_problems += layer_problems
    if count_problems:
        raise WeightsError(
            f"Cannot load {filepath}: layers with a different number of weights in the "
            f"file and the model: {'; '.join(count_problems)}. Pass exclude=[...] with these "
            "layer names to leave them unchanged.")
    if shape_problems:
        raise WeightShapeError(filepath, shape_problems)
    return assignments, skipped


def _read_weight(layer_group, weight_name, filepath):
    """A weight's array; WeightsError for unreadable data or NaN and infinite values."""
    try:
        value = layer_group[weight_name][()]
    except OSError as error:
        raise WeightsError(f"{filepath}: cannot read {layer_group.name[1:]}/{weight_name} "
                           f"({error}): the file is damaged; get it again.") from None
    if not np.isfinite(value).all():
        raise WeightsError(
            f"{filepath}: {layer_group.name[1:]}/{weight_name} holds NaN or infinite values "
            "(a diverged training run?). Use an earlier checkpoint or another weights file.")
    return value


def _match_weight_names(layer_name, model_weight_names, file_weight_names):
    """The file weight name for each model weight of one layer.

    A model weight ``res2a_branch2a/kernel:0`` matches the file weight whose
    name ends with ``kernel`` (``rpn_conv_shared/kernel`` for a nested model's
    ``rpn_conv_shared/kernel:0``), whatever prefix the file gives it. When the
    names do not match one to one, the file's order is used.
    """
    matched = []
    for model_name in model_weight_names:
        key = _strip_index(model_name)
        if key.startswith(layer_name + "/"):
            key = key[len(layer_name) + 1:]
        depth = key.count("/") + 1
        candidates = [file_name for file_name in file_weight_names
                      if "/".join(_strip_index(file_name).split("/")[-depth:]) == key]
        matched.append(candidates[0] if len(candidates) == 1 else None)
    if None in matched or len(set(matched)) != len(matched):
        return list(file_weight_names)
    return matched


def _strip_index(weight_name):
    """``"conv1/kernel:0"`` -> ``"conv1/kernel"``."""
    return re.sub(r":\d+$", "", weight_name)


def _shape_mismatch_message(filepath, shape_problems):
    layers = list(dict.fromkeys(layer for layer, _, _, _ in shape_problems))
    lines = [f"  {layer}: {name} is {file_shape} in the file, {model_shape} in the model"
             for layer, name, file_shape, model_shape in shape_problems]
    class_specific = set(layers) & set(CLASS_SPECIFIC_LAYERS)
    if class_specific and class_specific == set(layers):
        suggestion = list(CLASS_SPECIFIC_LAYERS)
        reason = ("The model's NUM_CLASSES differs from the file's (COCO has 81): load the "
                  "other layers and train these ones with\n")
    else:
        suggestion = layers
        reason = (("Layers that do not depend on the class count differ too" if class_specific
                   else "These layers do not depend on the class count") +
                  ": the file holds another architecture (a head width such as "
                  "FPN_CLASSIF_FC_LAYERS_SIZE, the backbone, ...). Build the model with the "
                  "file's settings (for a checkpoint of mrcnn: "
                  "runs.load_run_settings(path).to_config()), or leave these layers as they are "
                  "(random in a new model) with\n")
    return (f"Cannot load {filepath}: weight shapes differ in {len(layers)} layer(s) "
            f"({', '.join(layers)}):\n" + "\n".join(lines) + "\n" + reason +
            f"  load_weights(..., by_name=True, exclude={suggestion!r})")


def _log_result(result):
    if result.missing:
        logger.warning(
            "%d layers of the model are not in %s and keep their current values: %s",
            len(result.missing), result.filepath, ", ".join(result.missing))
    if result.unused:
        logger.warning(
            "%d layers of %s are not in the model and were not loaded: %s",
            len(result.unused), result.filepath, ", ".join(result.unused))
    if result.skipped:
        logger.info("%d layers of %s have other shapes than the model's and keep their "
                    "current values: %s", len(result.skipped), result.filepath,
                    ", ".join(result.skipped))
    logger.info("Loaded %d layers from %s (%d excluded)",
                len(result.loaded), result.filepath, len(result.excluded))


# Downloads -----------------------------------------------------------------

def get_coco_weights(path=None, cache_dir=None):
    """Local path of the original's ``mask_rcnn_coco.h5`` (ResNet101, 81 classes).

    Returns ``path`` if that file exists, else the file in ``cache_dir``
    (default ``files.default_cache_dir()``) if it exists; otherwise downloads
    ``COCO_WEIGHTS_URL`` to ``path`` (or into the cache folder).

    Raises:
        DownloadError: offline or failed download; the message gives the URL
            and the exact path to put the file at.
    """
    return _get_weights_file(COCO_WEIGHTS_URL, path, cache_dir)


def get_imagenet_weights(cache_dir=None):
    """Local path of the ResNet50 ImageNet weights (no top) the original used;
    cached and downloaded like ``get_coco_weights``. Load them by name."""
    return _get_weights_file(IMAGENET_WEIGHTS_URL, None, cache_dir)


def _get_weights_file(url, path, cache_dir):
    cached = os.path.join(cache_dir or files.default_cache_dir(), url.rsplit("/", 1)[-1])
    for candidate in (path, cached):
        if candidate is not None and os.path.isfile(candidate):
            return os.fspath(candidate)
    target = os.fspath(path) if path is not None else cached
    download_file(url, target)
    return target


def download_file(url, filepath, timeout=60, file_type="HDF5", is_file_type=h5py.is_hdf5):
    """Download ``url`` to ``filepath`` atomically, with a progress bar on stderr.

    The size is checked against the server's Content-Length and the file must
    be of ``file_type`` (``is_file_type(path)``, default HDF5, e.g. "ZIP" and
    ``zipfile.is_zipfile``); nothing is left at ``filepath`` on failure.

    Raises:
        DownloadError: offline, cut short or not of the type; the message
            gives the URL and the path to put the file at.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                files.atomic_path(filepath) as temp_path:
            expected = int(response.headers.get("Content-Length") or 0) or None
            received = _copy_with_progress(response, temp_path, expected,
                                           os.path.basename(filepath))
            if expected is not None and received != expected:
                raise DownloadError(
                    f"Download of {url} stopped after {received} of {expected} bytes. Run "
                    f"again, or download the file yourself and put it at:\n  {filepath}")
            if not is_file_type(temp_path):
                raise DownloadError(
                    f"{url} did not return the {file_type} file (a proxy or login page?). "
                    f"Download it yourself and put it at:\n  {filepath}")
    except DownloadError:
        raise
    except OSError as err:
        raise DownloadError(
            f"Could not download {url} ({err}). If this machine is offline, download that "
            f"URL on another machine and put the file at:\n  {filepath}") from err


def _copy_with_progress(response, filepath, expected, label, chunk_size=1 << 20):
    """Copy a response body to ``filepath``; returns the number of bytes."""
    with open(filepath, "wb") as f, files.ProgressBar(expected, label, unit="bytes") as progress:
        while chunk := response.read(chunk_size):
            f.write(chunk)
            progress.advance(len(chunk))
    return progress.done
