"""The seed's way: load the ``.keras`` model with TensorFlow/Keras and call ``model.predict`` on one image.

This is what the project replaced; ``edgecnn infer`` is compared against it (whole process).
Usage: python seed_keras.py MODEL.keras IMAGE HEIGHT WIDTH COLOR_MODE
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from PIL import Image
from tensorflow import keras

model_path, image_path, height, width, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model = keras.models.load_model(model_path)
image = Image.open(image_path).convert(mode).resize((width, height), Image.BILINEAR)
x = np.asarray(image, dtype=np.float32).reshape(1, height, width, -1) / 255.0
probabilities = model.predict(x)[0]
print(int(probabilities.argmax()), float(probabilities.max()))
