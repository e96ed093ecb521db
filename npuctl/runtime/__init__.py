"""Running models on this host. `loading.load_model` puts a deployment's artifacts (`placement.Artifacts`) into
sessions where its rules allow, or raises `placement.NotServable` saying why; `placement` decides NPU or CPU,
`compat` whether a context binary fits this device, `devices` what the host is, `qnn` the QNN EP plugin, and
`sessions` the ONNX Runtime sessions with the provider they really got, `power` the power policy they run under;
`capacity` what the host offers models now and `footprint` what a load costs. The models by task: `embeddings`
(`pooling`, `text`, `bucketed`), `scoring`, `tensors`, `seq2seq`, and text generation with onnxruntime-genai
(`generation`, `genai_pack`, `prompts`, `text_stream`, the logits processor of `penalties`). No HTTP here (that is
npuctl.serve), and no building (npuctl.artifacts)."""
