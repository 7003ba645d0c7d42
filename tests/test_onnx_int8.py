"""all-MiniLM-L6-v2 as int8 ONNX (encoder kind onnx-int8): made once from the installed package
under the models folder, its vectors close to the fp32 sentence-transformers ones on real texts, its
revision naming the artefact, its shipped version registering; and SEMINDEX_DEVICE resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semindex import lifecycle, settings
from semindex.chunking import ChunkingParameters, normalize_text, split_into_chunks
from semindex.data import DEFAULT_VERSIONS_FILE, SAMPLE_CORPUS_PATH
from semindex.encoders import (
    MINILM_INT8_ENCODER_NAME,
    MINILM_INT8_SPEC,
    MINILM_SPEC,
    PARAPHRASE_L3_ONNX_SPEC,
    EncoderSpec,
    EncoderUnavailable,
    encoder_device,
    encoder_display_name,
    encoder_revision,
    load_encoder,
    spec_from_name,
)
from semindex.encoders import int8_onnx, registry
from semindex.encoders.materialised import MARKER
from semindex.errors import InvalidInput

VERSION_KEY = "minilm-l6-v2-int8"
# Measured on these 200 texts: median 0.99, worst 0.96 (on 1,200 sample texts: median 0.991, worst
# 0.943). The floors leave room for another CPU's int8 kernels.
MEDIAN_COSINE_FLOOR = 0.98
MIN_COSINE_FLOOR = 0.85


def real_texts() -> list[str]:
    """100 chat messages and 100 BBC body chunks (128 tokens, as the pipeline cuts them)."""
    messages, chunks = [], []
    with SAMPLE_CORPUS_PATH.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["connector_instance_id"] == "bbc" and len(chunks) < 100:
                chunks.extend(split_into_chunks(normalize_text(record["fields"]["body"]), ChunkingParameters())[:2])
            elif record["stream"] == "messages" and len(messages) < 100 and len(record["fields"]["text"]) > 20:
                messages.append(record["fields"]["text"])
    return messages + chunks[:100]


@pytest.fixture(scope="module")
def int8(semindex_home):
    return load_encoder(MINILM_INT8_SPEC)


@pytest.mark.real_model
def test_int8_vectors_track_the_fp32_model_on_real_texts(int8):
    texts = real_texts()
    assert len(texts) == 200
    vectors = int8.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (200, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * load_encoder(MINILM_SPEC).encode(texts)).sum(axis=1)
    assert np.median(cosines) >= MEDIAN_COSINE_FLOOR, np.median(cosines)
    assert cosines.min() >= MIN_COSINE_FLOOR, (cosines.min(), texts[int(cosines.argmin())])
    # Dynamic quantisation scales each batch's activations by the batch's range, so a text's vector
    # moves a little with its batch neighbours (unlike fp32, where batching changes nothing).
    alone = np.vstack([int8.encode([text]) for text in texts[::20]])
    assert ((alone * vectors[::20]).sum(axis=1) >= 0.95).all()  # measured: median 0.994, worst 0.974


@pytest.mark.real_model
def test_the_artefact_is_made_once_under_the_models_folder_and_named_by_its_revision(int8, semindex_home):
    folder = Path(int8.model_path).parent
    assert folder.parent == Path(semindex_home).resolve() / "models"
    marker = json.loads((folder / MARKER).read_text())
    assert marker["revision"] == int8.revision == encoder_revision(MINILM_INT8_SPEC)
    # The optimizer fused every block; without its fusions the model is correct but slower.
    assert marker["fused"] == {"EmbedLayerNormalization": 1, "Attention": 6, "BiasGelu": 6, "SkipLayerNormalization": 12}
    assert sorted(path.name for path in folder.iterdir()) == [MARKER, "model.onnx", "sentence_bert_config.json", "tokenizer.json"]
    inode = folder.stat().st_ino
    again = int8_onnx.int8_folder(MINILM_INT8_ENCODER_NAME, Path(registry.minilm_model_path()), int8.revision)
    assert again == folder and folder.stat().st_ino == inode and json.loads((folder / MARKER).read_text()) == marker
    assert not list(folder.parent.glob(f".{folder.name}.partial-*"))
    assert (int8.name, int8.dimensions, int8.max_tokens, int8.device.name) == (MINILM_INT8_ENCODER_NAME, 384, 256, "cpu")


def test_the_revision_names_package_recipe_and_tools_without_loading_anything(monkeypatch):
    revision = encoder_revision(MINILM_INT8_SPEC)
    package = encoder_revision(MINILM_SPEC)
    tools = int8_onnx.tool_versions()
    assert revision == f"{package}+{int8_onnx.RECIPE.name}(torch=={tools['torch']},onnx=={tools['onnx']},onnxruntime=={tools['onnxruntime']})"
    assert spec_from_name(MINILM_INT8_ENCODER_NAME) == MINILM_INT8_SPEC
    assert encoder_display_name(MINILM_INT8_SPEC) == MINILM_INT8_ENCODER_NAME
    # Another tool version is another artefact: a new revision (so a registered version refuses it)
    # and a new cache folder.
    monkeypatch.setattr(int8_onnx, "tool_versions", lambda: {**tools, "onnxruntime": "9.9.9"})
    assert encoder_revision(MINILM_INT8_SPEC) != revision
    # A folder of the kind is a sentence-transformers BERT folder; its revision also names the recipe.
    folder_spec = EncoderSpec("onnx-int8", registry.minilm_model_path())
    assert spec_from_name(encoder_display_name(folder_spec)) == folder_spec
    assert int8_onnx.RECIPE.name in encoder_revision(folder_spec)


def test_a_folder_without_a_tokenizer_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidInput, match=f"{tmp_path}.*lacks tokenizer.json"):
        EncoderSpec("onnx-int8", str(tmp_path)).validate()
    with pytest.raises(InvalidInput, match="package:all-mpnet-base-v2"):
        EncoderSpec("onnx-int8", "package:all-mpnet-base-v2").validate()


@pytest.mark.real_model
def test_the_shipped_version_registers_with_its_dimensions_and_revision(db, int8):
    declaration = lifecycle.load_declarations(DEFAULT_VERSIONS_FILE)[VERSION_KEY]
    assert declaration.encoder == MINILM_INT8_SPEC and declaration.promotion == "manual"
    version = lifecycle.ensure_registered(db, VERSION_KEY)
    assert (version.encoder_name, version.encoder_revision, version.dimensions, version.distance_metric) == (
        MINILM_INT8_ENCODER_NAME, encoder_revision(MINILM_INT8_SPEC), 384, "cosine")
    assert version.encoder_spec == MINILM_INT8_SPEC
    assert lifecycle.register_declared(db, declaration).version_id == version.version_id  # idempotent


# --- SEMINDEX_DEVICE ------------------------------------------------------------------------------


def test_auto_resolves_to_the_cpu_here_with_its_batch_size(monkeypatch):
    monkeypatch.delenv("SEMINDEX_DEVICE", raising=False)
    assert settings.device() == "auto"
    for spec in (MINILM_SPEC, PARAPHRASE_L3_ONNX_SPEC, MINILM_INT8_SPEC, EncoderSpec("hashing", "8")):
        device = encoder_device(spec)
        assert (device.name, device.batch_size, device.onnx_providers()) == ("cpu", 64, ["CPUExecutionProvider"])
    monkeypatch.setenv("SEMINDEX_DEVICE", " CPU ")
    assert settings.device() == "cpu" and encoder_device(MINILM_SPEC).name == "cpu"


@pytest.mark.real_model
def test_encoders_load_on_the_resolved_device(monkeypatch):
    monkeypatch.setenv("SEMINDEX_DEVICE", "auto")
    minilm = load_encoder(MINILM_SPEC)
    assert (minilm.batch_size, minilm.device, str(minilm.model.device)) == (64, "cpu", "cpu")
    assert load_encoder(MINILM_SPEC, batch_size=8).batch_size == 8  # an explicit batch size wins
    l3 = load_encoder(PARAPHRASE_L3_ONNX_SPEC)
    assert l3._session.get_providers() == ["CPUExecutionProvider"]


def test_cuda_asked_where_there_is_none_is_an_error_naming_what_is_missing(monkeypatch):
    monkeypatch.setenv("SEMINDEX_DEVICE", "cuda")
    with pytest.raises(EncoderUnavailable, match=r"SEMINDEX_DEVICE=cuda, but torch .*(CPU-only build|no CUDA device)"):
        load_encoder(MINILM_SPEC)
    for spec in (PARAPHRASE_L3_ONNX_SPEC, MINILM_INT8_SPEC):
        with pytest.raises(EncoderUnavailable, match=r"SEMINDEX_DEVICE=cuda, but onnxruntime .* no CUDAExecutionProvider.*onnxruntime-gpu"):
            load_encoder(spec)
    assert encoder_device(EncoderSpec("hashing", "8")).name == "cpu"  # nothing to run on a GPU


@pytest.mark.parametrize("value", ["gpu", "cuda:0", "mps", "yes"])
def test_a_bad_device_is_refused_naming_it(monkeypatch, value):
    monkeypatch.setenv("SEMINDEX_DEVICE", value)
    with pytest.raises(InvalidInput, match=f"SEMINDEX_DEVICE={value!r} must be one of auto, cpu, cuda"):
        settings.device()
    with pytest.raises(InvalidInput, match="SEMINDEX_DEVICE"):
        load_encoder(PARAPHRASE_L3_ONNX_SPEC)
