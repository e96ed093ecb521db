"""Encoder builds (embeddings, rerankers, classifiers): export, static shapes and fixes, quantization, calibration inputs, verification."""
