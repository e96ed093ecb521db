"""Running models on this host: device detection (`devices`), the QNN EP plugin (`qnn`), where a
deployment may run (`placement`), ONNX Runtime sessions with the provider they really got
(`sessions`), and the loaded models: text embeddings (`embeddings`, `text`, `pooling`) and raw
tensors (`tensors`), put together by `loading.load_model`. No HTTP here (that is npuctl.serve), and
no building (npuctl.artifacts)."""
