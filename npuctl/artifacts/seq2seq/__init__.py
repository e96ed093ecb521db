"""Encoder-decoder builds (T5 family): export of both graphs, the decoder's NPU steps, verification."""
