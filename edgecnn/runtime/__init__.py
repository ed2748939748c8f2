"""The inference wing: numpy, Pillow and one runtime (onnxruntime or LiteRT), nothing heavier.

Nothing here may import tensorflow, keras, tf2onnx or onnx: this is the code that runs on a Raspberry Pi, and the
very code export validation runs every exported file through.
"""
