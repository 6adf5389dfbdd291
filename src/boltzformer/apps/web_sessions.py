"""The web app's server-side state, without gradio: the scans read from uploads, each
session's encoding, and the `EncodingCache` of the most recently used sessions that bounds
the server's memory. `apps/web.py` builds the page around them; `boltzformer serve` reads its
defaults from here without importing gradio."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from boltzformer.data.inputs import Volume, is_volume, read_plane, read_volume
from boltzformer.data.medio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    nifti_slices,
    read_dicom_dataset,
)
from boltzformer.inference.predictor import Predictor
from boltzformer.modeling.boltzformer import BoltzFormer, ImageFeatures

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: The encoding cache by default: the 32 most recently used sessions' scans and encodings,
#: 2048 MB at most.
CACHED_SESSIONS, CACHE_MB = 32, 2048
#: Largest NIfTI volume the app reads by default: 2**28 voxels (256 MiB as uint8 display).
DEFAULT_MAX_VOXELS = 2**28
#: Requests waiting for the model at most (more are refused: "busy, try again"), and the
#: seconds one request may run before it is stopped at its next stage, by default.
QUEUE_SIZE, TIME_LIMIT = 32, 120.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server: pixels per image, voxels per volume (and, for a
    volume's export, prompts x voxels), seconds of work (checked between its stages)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_voxels: int = DEFAULT_MAX_VOXELS
    max_seconds: float = TIME_LIMIT


@dataclass
class Scan:
    """An uploaded input as display slices: slices (N, H, W) or (N, H, W, 3) uint8, N = 1 for
    an image or DICOM slice; `volume` (NIfTI only) keeps the affine and header, `dicom` (a
    DICOM slice only) its header, which the export's DICOM SEG references."""

    name: str
    slices: np.ndarray
    volume: Volume | None
    axis: int
    windowable: bool
    dicom: Dataset | None = None


@dataclass
class Encoding:
    """What a session has loaded: its scan, the slice shown, and the Predictor holding that
    slice's encoding (the memory a session costs; `EncodingCache` bounds it)."""

    scan: Scan
    index: int
    predictor: Predictor
    feature_bytes: int  # the model's encoding of one image (`feature_bytes(model)`)

    @property
    def image(self) -> np.ndarray:
        """The encoded slice, (H, W, 3) uint8 RGB (once the predictor has it)."""
        image = self.predictor.image
        assert image is not None  # the slice is set before the encoding is used
        return image

    @property
    def nbytes(self) -> int:
        """Bytes held: the scan's slices, the display image and the encoded features (a
        windowed image's as encoded, else one image's `feature_bytes`)."""
        image = self.predictor.image
        return self.scan.slices.nbytes + (0 if image is None else image.nbytes) + \
            (self.predictor.encoded_bytes or self.feature_bytes)


def feature_bytes(model: BoltzFormer) -> int:
    """Bytes of `model`'s encoding of one image (the same for every image: it sees them all
    at its `image_size`)."""
    size = model.config.image_size
    with torch.inference_mode():
        feats: ImageFeatures = model.encode_image(
            torch.zeros(1, 3, size, size, device=model.device))
    return sum(t.nbytes for t in (*feats.levels, feats.semantic, feats.pixels))


class EncodingCache:
    """The encodings of the `max_sessions` most recently used sessions, `max_bytes` at most in
    all; older ones are evicted (least recently used first). Thread-safe."""

    def __init__(self, max_sessions: int = CACHED_SESSIONS,
                 max_bytes: int = CACHE_MB * 2**20) -> None:
        if max_sessions < 1 or max_bytes < 1:
            raise ValueError("the encoding cache needs room for at least one session")
        self.max_sessions, self.max_bytes = max_sessions, max_bytes
        self._entries: OrderedDict[str, Encoding] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by all cached encodings."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def check_fits(self, nbytes: int, name: str) -> None:
        """A one-line ValueError when an encoding of `nbytes` could never be cached."""
        if nbytes > self.max_bytes:
            raise ValueError(f"{name} needs {nbytes / 2**20:.0f} MB in memory, over this "
                             f"server's cache of {self.max_bytes / 2**20:.0f} MB: load a "
                             "smaller file")

    def put(self, key: str, encoding: Encoding) -> None:
        """Cache `encoding` as `key`'s (the most recently used), evicting the least recently
        used ones while over either limit."""
        self.check_fits(encoding.nbytes, encoding.scan.name)
        with self._lock:
            self._entries[key] = encoding
            self._entries.move_to_end(key)
            total = sum(e.nbytes for e in self._entries.values())
            while len(self._entries) > self.max_sessions or total > self.max_bytes:
                evicted, old = self._entries.popitem(last=False)
                total -= old.nbytes
                log.info("evicted the encoding of session %s (%s)", evicted, old.scan.name)

    def get(self, key: str) -> Encoding | None:
        """`key`'s encoding (now the most recently used), or None when it has none."""
        with self._lock:
            encoding = self._entries.get(key)
            if encoding is not None:
                self._entries.move_to_end(key)
            return encoding

    def pop(self, key: str) -> None:
        """Forget `key`'s encoding, if any."""
        with self._lock:
            self._entries.pop(key, None)


@dataclass
class Session:
    """One browser session's own small state: its key in the `EncodingCache`, the name of the
    scan it loaded last (to tell an evicted encoding from none), and `folder` (made under
    `work_dir` when first needed) for its downloads and figures."""

    work_dir: Path
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    loaded: str | None = None
    folder: Path | None = None
    runs: int = 0

    def run_folder(self) -> Path:
        """A new folder for one request's files."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=self.work_dir))
        self.runs += 1
        path = self.folder / f"run{self.runs}"
        path.mkdir()
        return path

    def close(self) -> None:
        """Delete the session's files."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def read_scan(path: Path, window: str | None, axis: int, limits: Limits) -> Scan:
    """Read an upload the way `boltzformer predict` does; `window` applies to DICOM and
    NIfTI only (ignored for PNG/JPG/TIFF)."""
    if is_volume(path):
        volume = read_volume(path, window, axis, max_voxels=limits.max_voxels)
        volume.reference.uncache()  # the float volume nibabel kept: the display copy suffices
        return Scan(path.name, nifti_slices(volume.display, axis), volume, axis, True)
    windowable = not path.name.lower().endswith(IMAGE_EXTENSIONS)
    plane = read_plane(path, window if windowable else None, max_pixels=limits.max_pixels)
    dicom = read_dicom_dataset(path, header_only=True) if windowable else None
    return Scan(path.name, plane[None], None, axis, windowable, dicom)


def existence_note(prompts: list[str], found: np.ndarray | None) -> str:
    """The status text's note on targets not found (the existence head said absent, the
    answer was under its size floor or below the min score): found (P,) for a slice or
    (P, N) for a volume's N slices, None when nothing can say "absent" (then "")."""
    if found is None:
        return ""
    parts = []
    for prompt, f in zip(prompts, found):
        if f.ndim and f.any():
            parts.append(f'"{prompt}" found on {int(f.sum())} of {f.size} slices')
        elif not f.any():
            parts.append(f'"{prompt}": not found (empty mask)')
    return (" " + "; ".join(parts) + ".") if parts else ""
