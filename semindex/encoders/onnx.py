"""Transformers exported to ONNX, run by onnxruntime (on the CPU, or on CUDA when the device resolved
by semindex.encoders.device is a GPU) with the `tokenizers` library."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semindex.encoders.base import l2_normalised, once
from semindex.encoders.device import Device
from semindex.errors import InvalidInput

DEFAULT_MAX_TOKENS = 128


class OnnxEncoder:
    """A transformer exported to ONNX, run on `device` (the CPU unless given): tokenised with
    `tokenizers`, truncated to `max_tokens`, padded per batch (texts sorted by length so batches pad
    little), pooled either by the graph (a (batch, d) output) or here (mean over the attention mask
    of a (batch, seq, d) output), then L2-normalised."""

    def __init__(
        self,
        name: str,
        model_path: str,
        tokenizer_path: str,
        revision: str,
        *,
        output_name: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 64,
        device: Device | None = None,
    ) -> None:
        self.name = name
        self.revision = revision
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = device or Device("cpu", "cpu")
        self._session = _load_onnx_session(model_path, tuple(self.device.onnx_providers()))
        self._tokenizer = _load_tokenizer(tokenizer_path, max_tokens)
        self._input_names = [i.name for i in self._session.get_inputs()]
        unknown = set(self._input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise InvalidInput(f"onnx model {model_path!r} wants inputs this encoder cannot give: {sorted(unknown)}")
        self._output_name, self._pooled_by_graph, self.dimensions = _sentence_output(self._session, output_name, model_path)
        padding = self._tokenizer.padding or {}
        self._pad_id = int(padding.get("pad_id", self._tokenizer.token_to_id("[PAD]") or 0))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if len(texts) == 0:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._encode_batch([encodings[i] for i in rows])
        return l2_normalised(out)

    def _encode_batch(self, encodings) -> np.ndarray:
        width = max(1, max(len(e.ids) for e in encodings))
        input_ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        token_type_ids = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            input_ids[row, :length] = encoding.ids
            attention_mask[row, :length] = encoding.attention_mask
            token_type_ids[row, :length] = encoding.type_ids
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        (output,) = self._session.run([self._output_name], {name: given[name] for name in self._input_names})
        if self._pooled_by_graph:
            return output
        mask = attention_mask[..., None].astype(np.float32)
        return (output * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)


def _sentence_output(session, output_name: str | None, model_path: str) -> tuple[str, bool, int]:
    """(output name, pooled by the graph, dimensions): the named output, else the one (batch, d)
    float output, else the one (batch, seq, d) float output to mean-pool here."""
    outputs = {o.name: o for o in session.get_outputs()}
    if output_name is not None:
        if output_name not in outputs:
            raise InvalidInput(f"onnx model {model_path!r} has no output {output_name!r}; it has {sorted(outputs)}")
        candidates = [outputs[output_name]]
    else:
        floats = [o for o in outputs.values() if o.type == "tensor(float)"]
        candidates = [o for o in floats if len(o.shape) == 2] or [o for o in floats if len(o.shape) == 3]
        if len(candidates) != 1:
            raise InvalidInput(
                f"onnx model {model_path!r}: cannot tell which output is the sentence embedding among "
                f"{[(o.name, o.shape) for o in outputs.values()]}"
            )
    chosen = candidates[0]
    dimensions = chosen.shape[-1]
    if not isinstance(dimensions, int) or len(chosen.shape) not in (2, 3):
        raise InvalidInput(f"onnx model {model_path!r}: output {chosen.name!r} has shape {chosen.shape}, not (batch, [seq,] d)")
    return chosen.name, len(chosen.shape) == 2, dimensions


def _load_onnx_session(model_path: str, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    def build():
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only; onnxruntime warns about unused initialisers
        return onnxruntime.InferenceSession(model_path, sess_options=options, providers=list(providers))

    return once(("onnx session", model_path, providers), build)


def _load_tokenizer(tokenizer_path: str, max_tokens: int):
    def build():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(tokenizer_path)
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()  # padded per batch in OnnxEncoder
        return tokenizer

    return once(("tokenizer", tokenizer_path, max_tokens), build)


def folder_max_tokens(folder: Path) -> int:
    """max_seq_length from sentence_bert_config.json, else the tokenizer's own truncation."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        pass
    try:
        truncation = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("truncation") or {}
        return int(truncation["max_length"])
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_MAX_TOKENS
