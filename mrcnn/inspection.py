"""Looking inside a built model: run its graph up to any tensors, by handle or by name.

``MaskRCNN.run_graph`` and ``MaskRCNN.ancestor`` are built on this module.

The original's notebooks fetched intermediate tensors of the TF1 graph by op
name, e.g. ``model.ancestor(pillar, "ROI/pre_nms_anchors:0")``. A Keras 3
model has no such graph; instead, a layer that wants its intermediate tensors
seen has a ``stages(inputs)`` method returning them in a dict, and a
``STAGES`` tuple naming them in order, the last being the layer's output
(``layers.ProposalLayer``: pre_nms_anchors, refined_anchors,
refined_anchors_clipped, nms_indices, proposals). A ``LayerStage`` handle
names one of them; ``run`` computes the layer's inputs with the model and
then the layer's stages from those inputs, eagerly; the layer's output, when
also asked for, is then its last stage, from the same computation.

The original's names keep working: "<layer>/<stage>:0", and for the RPN's
non-max suppression "ROI/rpn_non_max_suppression:0" (with the
"/NonMaxSuppressionV2:0" and "V3" variants of TF 1.4-1.10), which gives, as
the TF1 node did, the indices kept for the first image, int32 [kept].
"""

import dataclasses
import re

import keras
import numpy as np

# The op names of the original's ProposalLayer for its NMS: the indices kept,
# one op per image ("_1", "_2", ... for the images after the first), with the
# TF-version-specific suffixes the original's notebook tries.
_NMS_NAME = re.compile(r"rpn_non_max_suppression(?:_(\d+))?(?:/NonMaxSuppressionV\d)?")


@dataclasses.dataclass(frozen=True)
class LayerStage:
    """A handle on an intermediate tensor of a layer with ``stages``.

    Attributes:
        layer: name of the layer in the model, e.g. "ROI".
        stage: key of ``layer.stages(...)``, e.g. "pre_nms_anchors".
        image: None for the whole batch; an image index for that image's
            valid rows only (the TF1 NMS nodes were per image: the -1
            padding of ``nms_indices`` is removed).
    """

    layer: str
    stage: str
    image: int | None = None

    @property
    def name(self):
        return f"{self.layer}/{self.stage}"


def find_stage(keras_model, tensor, name):
    """The ``LayerStage`` that the original's graph-node ``name`` denotes, or None.

    Args:
        keras_model: the built model.
        tensor: the symbolic tensor to search from (its ancestors, itself
            included), e.g. ``keras_model.get_layer("ROI").output``.
        name: a TF1 node name, "<layer>/<stage>:0", e.g. "ROI/refined_anchors:0".

    Returns:
        The handle, or None when the layer is not upstream of ``tensor``
        (as the original returned None for a node it did not find).

    Raises:
        ValueError: the name denotes nothing this model can compute; the
            message says what to call instead.
    """
    layer_name, _, rest = name.split(":")[0].partition("/")
    layer = _layer_or_none(keras_model, layer_name)
    stages = getattr(layer, "STAGES", ())
    if not stages or not rest:
        raise ValueError(_unknown_name_message(keras_model, name, layer))
    nms = _NMS_NAME.fullmatch(rest)
    if rest in stages:
        handle = LayerStage(layer_name, rest)
    elif nms and "nms_indices" in stages:
        handle = LayerStage(layer_name, "nms_indices", image=int(nms.group(1) or 0))
    else:
        raise ValueError(_unknown_name_message(keras_model, name, layer))
    upstream = keras.Model(keras_model.inputs, tensor)
    return handle if any(one is layer for one in upstream.layers) else None


def resolve(keras_model, target, name):
    """A symbolic tensor or ``LayerStage`` for one requested output of ``run``.

    ``target`` is a symbolic tensor of the model, a ``LayerStage``, or a
    string: a layer name (its output) or a TF1 node name ("ROI/pre_nms_anchors:0").
    """
    if target is None:
        raise ValueError(
            f"run_graph: the output {name!r} is None. model.ancestor() returns None for a layer "
            "that is not upstream of the tensor it searches from; give a tensor such as "
            "model.keras_model.get_layer(NAME).output, or a name like 'ROI/pre_nms_anchors:0'.")
    if not isinstance(target, str):
        return target
    layer = _layer_or_none(keras_model, target.split(":")[0])
    if layer is not None:
        return layer.output
    return find_stage(keras_model, keras_model.outputs, target)


def run(keras_model, inputs, outputs):
    """Run a model on ``inputs`` and return the values of ``outputs``.

    Args:
        keras_model: a functional Keras model.
        inputs: its input arrays, in the order of ``keras_model.inputs``.
        outputs: list of (name, target) pairs, or a dict name -> target;
            each target as ``resolve`` takes it.

    Returns:
        A dict name -> numpy array, in the order of ``outputs``.
    """
    outputs = list(dict(outputs).items())
    targets = [resolve(keras_model, target, name) for name, target in outputs]
    layer_inputs = {target.layer: _as_list(keras_model.get_layer(target.layer).input)
                    for target in targets if isinstance(target, LayerStage)}
    # The output of a layer whose stages are computed is its last stage, so that the stages
    # and the output come from one computation (the NMS indices index the boxes given).
    targets = [_output_stage(keras_model, target, layer_inputs) for target in targets]
    plain = [target for target in targets if not isinstance(target, LayerStage)]
    probe = keras.Model(keras_model.inputs,
                        plain + [tensor for tensors in layer_inputs.values() for tensor in tensors])
    values = iter(_as_list(probe.predict_on_batch(inputs)))
    plain_values = iter([next(values) for _ in plain])
    stages = {}
    for layer_name, tensors in layer_inputs.items():
        computed = keras_model.get_layer(layer_name).stages([next(values) for _ in tensors])
        stages[layer_name] = {key: np.asarray(value) for key, value in computed.items()}

    result = {}
    for (name, _), target in zip(outputs, targets):
        if not isinstance(target, LayerStage):
            result[name] = next(plain_values)
        elif target.image is None:
            result[name] = stages[target.layer][target.stage]
        else:
            rows = stages[target.layer][target.stage][target.image]
            result[name] = rows[rows >= 0]
    return result


def _output_stage(keras_model, target, layer_inputs):
    """``target``, or the ``LayerStage`` of the last stage if it is a computed layer's output."""
    for layer_name in layer_inputs:
        layer = keras_model.get_layer(layer_name)
        if target is layer.output:
            return LayerStage(layer_name, layer.STAGES[-1])
    return target


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _layer_or_none(keras_model, name):
    try:
        return keras_model.get_layer(name)
    except ValueError:
        return None


def _unknown_name_message(keras_model, name, layer):
    """Why a TF1 node name cannot be looked up, and what to call instead."""
    known = [f"'{layer.name}/{stage}:0'" for layer in keras_model.layers
             for stage in getattr(layer, "STAGES", ())]
    known += [f"'{layer.name}/rpn_non_max_suppression:0'" for layer in keras_model.layers
              if "nms_indices" in getattr(layer, "STAGES", ())]
    instead = (f"use the layer's output, model.keras_model.get_layer({layer.name!r}).output, "
               if layer is not None else "use a layer's output, "
               "model.keras_model.get_layer(NAME).output, ")
    return (f"No graph node {name!r}: a Keras 3 model has no TF1 graph to search by op name. "
            f"Instead {instead}or one of the intermediate tensors run_graph computes: "
            f"{', '.join(known)} (see MIGRATING.md).")
