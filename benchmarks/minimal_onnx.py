"""The floor for a Python CLI: open model.onnx with onnxruntime, preprocess one PNG with Pillow/numpy, print the label.

No manifest, no checks, no error handling: what a hand-written script for one model would do. ``edgecnn infer`` is
compared against this (whole process: interpreter start-up, imports, model load, one inference).
Usage: python minimal_onnx.py MODEL_DIR IMAGE
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

folder, image_path = sys.argv[1], sys.argv[2]
with open(f"{folder}/edgecnn.json") as handle:  # labels and input size; the seed hard-coded these
    manifest = json.load(handle)
prep = manifest["preprocessing"]
image = Image.open(image_path).convert(prep["color_mode"]).resize((prep["width"], prep["height"]), Image.BILINEAR)
x = np.asarray(image, dtype=np.float32).reshape(1, prep["height"], prep["width"], -1) * np.float32(prep["scale"])
session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
probabilities = session.run(None, {session.get_inputs()[0].name: x})[0][0]
print(manifest["labels"][int(probabilities.argmax())], float(probabilities.max()))
