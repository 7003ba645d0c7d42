"""A sentence-transformers BERT model (all-MiniLM-L6-v2 from its package) turned once into an int8
ONNX model for the CPU: exported by torch, fused by onnxruntime's transformer optimizer, its MatMul
weights quantised to int8 by onnxruntime's dynamic quantiser. Made offline from the installed
package, cached under the models folder, keyed by what its bytes depend on.

The recipe, and why (measured on 1,200 sample-corpus texts against the fp32 sentence-transformers
vectors, AMD EPYC with AVX2 and no VNNI):

- export: torch.onnx's TorchScript exporter (dynamo=False), opset 17, eager attention. The dynamo
  exporter (torch 2.13's default) also works, but onnxruntime's BERT fusions recognise none of its
  attention blocks (0 of 6 fused, against 6 Attention + EmbedLayerNormalization + 12
  SkipLayerNormalization + 6 BiasGelu here), and it takes 5x longer.
- optimise: onnxruntime.transformers.optimizer, model_type "bert", opt_level 0 (the fusions only;
  the session applies its own graph optimisations when it loads). fp32 after this step: cosine 1.0.
- quantise: onnxruntime.quantization.quantize_dynamic, int8 weights, per channel, reduce_range,
  MatMul nodes only. Per tensor lost too much (median cosine 0.95); per channel gives 0.99; keeping
  the fused Attention nodes in float and using 7-bit weights (reduce_range: the u8 x s8 products of
  CPUs without VNNI saturate at 8 bits) lifts the worst text from 0.90 to 0.94.

The cache folder's name hashes the revision (package version, recipe, and the versions of torch,
onnx and onnxruntime that made it), so a new package or tool re-exports into a new folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from semindex import settings
from semindex.encoders.base import EncoderUnavailable
from semindex.encoders.materialised import materialised
from semindex.errors import InvalidInput

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
TOOLS = ("torch", "onnx", "onnxruntime")


@dataclass(frozen=True)
class Int8Recipe:
    """What the int8 artefact is made with; its `name` goes into the encoder revision."""

    name: str = "int8-dynamic-perchannel-reducerange-matmul-v1"
    opset: int = 17
    optimizer_model_type: str = "bert"
    per_channel: bool = True
    reduce_range: bool = True
    op_types: tuple[str, ...] = ("MatMul",)


RECIPE = Int8Recipe()


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools that make the artefact, from metadata (nothing imported)."""
    versions = {}
    for tool in TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            raise EncoderUnavailable(
                f"the int8 ONNX encoder needs the package {tool!r} to make its model once, and it is not "
                f"installed: pip install {tool}"
            ) from None
    return versions


def int8_revision(source_revision: str) -> str:
    """The revision of the artefact made from a model at `source_revision`: it changes with the model,
    the recipe or any tool that makes it, so a version can never mix vectors of two artefacts."""
    tools = ",".join(f"{tool}=={version}" for tool, version in tool_versions().items())
    return f"{source_revision}+{RECIPE.name}({tools})"


def int8_folder(display_name: str, source_folder: Path, revision: str) -> Path:
    """The folder holding model.onnx (int8) and tokenizer.json for `revision`, made on first use
    (under a lock, atomically: semindex.encoders.materialised)."""
    slug = display_name.rsplit("/", 1)[-1].replace(":", "-").strip("-") or "model"
    digest = hashlib.sha256(revision.encode("utf-8")).hexdigest()[:12]
    target = settings.models_home() / f"{slug}-int8-{digest}"
    return materialised(target, lambda folder: make_int8(source_folder, folder, revision), what=display_name)


def make_int8(source_folder: Path, folder: Path, revision: str) -> dict:
    """Export, optimise and quantise the model in `source_folder` into `folder` (created here)."""
    folder.mkdir()
    scratch = folder.parent
    exported, optimised = scratch / "exported.onnx", scratch / "optimised.onnx"
    facts = export_fp32(source_folder, exported)
    with _quiet_onnxruntime_tools():
        fused = optimise(exported, optimised, facts["num_heads"], facts["hidden_size"])
        quantise(optimised, folder / "model.onnx")
    shutil.copyfile(source_folder / "tokenizer.json", folder / "tokenizer.json")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": facts["max_seq_length"]}), encoding="utf-8")
    return {"revision": revision, "recipe": asdict(RECIPE), "source": str(source_folder), **facts,
            "fused": {name: count for name, count in fused.items() if count}, "bytes": (folder / "model.onnx").stat().st_size}


def export_fp32(source_folder: Path, path: Path) -> dict:
    """The transformer of a sentence-transformers folder as ONNX (token embeddings, (batch, seq, d):
    the encoder mean-pools them), with batch and sequence dynamic. Facts about the model returned."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention: the exported graph then has the MatMul/Softmax pattern the optimizer fuses.
    model = SentenceTransformer(str(source_folder), device="cpu", model_kwargs={"attn_implementation": "eager"})
    _require_mean_pooling(model, source_folder)
    transformer = model[0].auto_model.eval()
    config = transformer.config
    if getattr(config, "model_type", None) != "bert":
        raise InvalidInput(f"{source_folder}: the int8 ONNX recipe is for BERT models, not {config.model_type!r}")

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 16), dtype=torch.long)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            TokenEmbeddings(transformer), (sample, sample, torch.zeros_like(sample)), str(path),
            dynamo=False, opset_version=RECIPE.opset, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
        )
    return {"num_heads": int(config.num_attention_heads), "hidden_size": int(config.hidden_size),
            "max_seq_length": int(model.max_seq_length)}


def _require_mean_pooling(model, source_folder: Path) -> None:
    pooling = next((module for module in model if type(module).__name__ == "Pooling"), None)
    mode = getattr(pooling, "pooling_mode", None) if pooling is not None else None
    if mode is None and pooling is not None:
        mode = "mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else "other"
    if mode != "mean":
        raise InvalidInput(f"{source_folder}: the int8 ONNX encoder mean-pools; this model pools by {mode!r}")


def optimise(source: Path, target: Path, num_heads: int, hidden_size: int) -> dict:
    """onnxruntime's BERT fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu)."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(source), model_type=RECIPE.optimizer_model_type, num_heads=num_heads, hidden_size=hidden_size,
        opt_level=0, use_gpu=False,
    )
    model.save_model_to_file(str(target))
    return model.get_fused_operator_statistics()


def quantise(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights, per channel, 7-bit (see the module's notes)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=RECIPE.per_channel,
        reduce_range=RECIPE.reduce_range, op_types_to_quantize=list(RECIPE.op_types),
        # Shape inference cannot type the outputs of the fused com.microsoft nodes; they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    """The optimizer logs every fusion at INFO through loggers named after its bare modules
    ("onnx_model", "fusion_base", ...), and the quantiser logs each tensor through the root logger:
    hundreds of lines on a CLI at INFO. Only theirs are quieted, and only while they run."""
    from onnxruntime.transformers import optimizer  # noqa: F401  (creates the tool loggers)

    tools = Path(optimizer.__file__).resolve().parent
    quieted = []
    for name in list(logging.root.manager.loggerDict):
        module_file = getattr(sys.modules.get(name), "__file__", None)
        if module_file and Path(module_file).resolve().parent == tools:
            tool_logger = logging.getLogger(name)
            quieted.append((tool_logger, tool_logger.level))
            tool_logger.setLevel(logging.WARNING)
    root_filter = _BelowError()  # a logger's own filter sees only records logged on it: root's calls
    logging.root.addFilter(root_filter)
    try:
        yield
    finally:
        logging.root.removeFilter(root_filter)
        for tool_logger, level in quieted:
            tool_logger.setLevel(level)
