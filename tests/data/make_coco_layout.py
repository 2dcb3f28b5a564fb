"""Write coco_weights_layout.json from the reference list of the released mask_rcnn_coco.h5.

The reference, ``shared/reference/mask_rcnn_coco_weights.tsv`` beside the repository, lists
every weight of the original's COCO file (layer group, weight name, shape). The JSON keeps
the same facts, compactly and in the repository, so that tests/test_weights.py can build a
file of that layout without the reference (and without the 250 MB weights)::

    python tests/data/make_coco_layout.py ../shared/reference/mask_rcnn_coco_weights.tsv
"""

import ast
import json
import os
import re
import sys

LAYOUT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coco_weights_layout.json")


def read_reference_tsv(path):
    """[(group, weight name, shape)] of the released mask_rcnn_coco.h5, in file order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            if line.startswith("#") or line.startswith("layer\t"):
                continue
            group, weight_name, shape = line.split("\t")
            weight_name = re.match(r".*?:\d+", weight_name).group(0)  # one row has junk after ":0"
            rows.append((group, weight_name, tuple(ast.literal_eval(shape))))
    return rows


def layout_of(rows):
    """{"layers": [[group, [[weight name, shape], ...]], ...]} in file order."""
    layers = {}
    for group, weight_name, shape in rows:
        layers.setdefault(group, []).append([weight_name, list(shape)])
    return {"source": "mask_rcnn_coco.h5 (matterport/Mask_RCNN v2.0 release)",
            "layers": [[group, weights] for group, weights in layers.items()]}


if __name__ == "__main__":
    with open(LAYOUT_FILE, "w", encoding="utf-8") as f:
        json.dump(layout_of(read_reference_tsv(sys.argv[1])), f, separators=(",", ":"))
        f.write("\n")
    print(LAYOUT_FILE)
