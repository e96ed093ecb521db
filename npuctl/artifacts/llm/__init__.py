"""Chat-model builds: onnxruntime-genai folders, and QNN decoder-pipeline packs (Olive's stages, compile, verify)."""
