"""edgecnn: small Keras CNNs, exported to validated ONNX and int8 TFLite, run on a CPU without TensorFlow.

The names here are the public Python API. Importing this package loads numpy and Pillow only: the runtime backend
is imported when a model is opened, and the training and export wings only when their functions are called.
"""

from .errors import EdgecnnError, InputError, MissingDependencyError, ModelError
from .runtime.tasks import (
                            Category,
                            Classification,
                            Detection,
                            DetectionResult,
                            ImageClassifier,
                            ObjectDetector,
                            TextClassifier,
                            load,
)

__version__ = "0.1.0"

__all__ = [
                            "Category",
                            "Classification",
                            "Detection",
                            "DetectionResult",
                            "EdgecnnError",
                            "ImageClassifier",
                            "InputError",
                            "MissingDependencyError",
                            "ModelError",
                            "ObjectDetector",
                            "TextClassifier",
                            "__version__",
                            "load",
]
