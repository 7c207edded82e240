"""ONNX: export of graphconv networks (standard ops only, for onnxruntime and GPUs), running them on onnxruntime,
and import of models from other frameworks into graphconv's IR."""
