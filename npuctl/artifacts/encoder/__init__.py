"""Encoder builds (embeddings, rerankers, classifiers): export (`export`) and verification (`verify`, `verify_scores`).
The steps they share with other builds are the package's own: static shapes and fixes (`graphs`), quantization
(`quantize`), calibration inputs (`inputs`)."""
