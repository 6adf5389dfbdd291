"""Reader for data sets in the BiomedParse format: one item per mask, with its text prompt.

Layout: `<root>/<split>/` images, `<root>/<split>_mask/` masks, optional `<root>/<split>.json`.
Image names end in `_<modality>_<site>` (`01_CT_lung.png`); a mask is named
`<image stem>_<target>.png` with `+` for spaces (`01_CT_lung_left+kidney.png`).

Checks happen in two stages. Building the data set reads only file names and image headers:
a mask without its image, a file that is not an image, a mask whose size differs from its
image, or an image over `max_pixels` is found there. Pixel data is decoded on access: a
truncated file or mask values other than 0/255 are found then. Either way a `DataError`
names the file and the problem; with `skip_bad=True` the sample is skipped instead (logged
as a warning and recorded in `.skipped`; at access time the next good sample is returned).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from .augment import random_augment
from .crops import resample
from .errors import DataError
from .medio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, image_shape, read_image, read_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    """One item of a data set (one mask), without pixels.

    `sentences` holds the prompts (from the JSON, else the one built from the file names);
    `area` is the object's area fraction when the JSON records it (`area_fraction`, as the
    built-in phantoms do), else None: the loaded item always carries the measured area.
    `volume` and `slice` name the source volume (a key of the JSON's "volumes") and the index
    along its axis when the image is a slice cut from a volume, else None.
    """

    image_path: Path
    mask_path: Path
    target: str
    modality: str
    site: str
    sentences: tuple[str, ...]
    area: float | None = None
    volume: str | None = None
    slice: int | None = None

    @property
    def image_file(self) -> str:
        return self.image_path.name

    @property
    def mask_file(self) -> str:
        return self.mask_path.name


class Skipped(NamedTuple):
    """A sample left out because of bad input: the file and the reason."""

    file: str
    reason: str


def list_splits(root: str | Path) -> list[str]:
    """Splits in a data set folder: names with both `<split>/` and `<split>_mask/` (so
    `<split>_mask/` and `<split>_instances/` are not splits)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not d.name.endswith("_mask") and (root / f"{d.name}_mask").is_dir()
    )


def parse_image_stem(stem: str) -> tuple[str, str]:
    """(modality, site) from an image stem such as `01_CT_lung`; empty strings if absent."""
    parts = stem.split("_")
    if len(parts) < 3:
        return "", ""
    return parts[-2].replace("+", " "), parts[-1].replace("+", " ")


def default_prompt(target: str, site: str, modality: str) -> str:
    """The prompt used without JSON: `<target> in <site> <modality>` ("nodule in lung CT")."""
    where = " ".join(p for p in (site, modality) if p)
    return f"{target} in {where}" if where else target


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem; two images with one stem are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise DataError(
                f"{path}: two images share the name {path.stem!r} ({found[path.stem].name})"
            )
        found[path.stem] = path
    return found


def _image_for_mask(mask_stem: str, image_stems: dict[str, Path]) -> tuple[str, str] | None:
    """(image stem, target) for a mask stem: the longest image stem followed by `_`."""
    cut = len(mask_stem)
    while (cut := mask_stem.rfind("_", 0, cut)) > 0:
        if mask_stem[:cut] in image_stems:
            return mask_stem[:cut], mask_stem[cut + 1 :].replace("+", " ")
    return None


def _inside(folder: Path, name: Any, json_path: Path, field: str) -> Path:
    """`folder / name` for a JSON file name, refusing absolute paths and `..` escapes."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{json_path}: {field} must be a file name, got {name!r}")
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or PureWindowsPath(name).drive or ".." in relative.parts:
        raise DataError(f"{json_path}: {field} {name!r} points outside the data set folder")
    path = folder / relative
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise DataError(
            f"{json_path}: {field} {name!r} resolves outside the data set folder"
        ) from None
    return path


def _slice_of(image: dict[str, Any], json_path: Path) -> tuple[str, int]:
    """(volume, slice) of a JSON image entry cut from a volume."""
    volume, index = image["volume"], image.get("slice")
    if not isinstance(volume, str) or not isinstance(index, int) or isinstance(index, bool):
        raise DataError(f"{json_path}: image {image.get('file_name')!r} needs a 'volume' name "
                        f"and an integer 'slice', got {volume!r} and {index!r}")
    return volume, index


def _area_fraction(value: Any) -> float | None:
    if isinstance(value, int | float) and 0.0 <= value <= 1.0:
        return float(value)
    return None


class BiomedParseDataset(Dataset):
    """A BiomedParse-format split as a torch Dataset, one item per mask.

    Each item is a dict: "image" float32 (3, S, S) in 0–255, "mask" float32 (1, S, S) of
    exactly 0/1 (S = `image_size`; images are resized to a square, masks stay binary and a tiny
    object keeps at least one pixel; `image_size=None` keeps each image at its own size, (3, H,
    W) and (1, H, W), for crops and windows at native resolution), "prompt", "target",
    "modality", "site", "image_file", "mask_file", "dataset" (str) and "area" (float: the
    object's area fraction in the original mask), "mask_path" (str), "instances_path" (str: the
    mask's instance map `<split>_instances/<mask file>`, "" when there is none), "volume" (str,
    "" unless the image is a slice of a volume) and "slice" (int, -1 likewise). `train=True`
    draws a random sentence per access and, unless `augment=False`, applies `random_augment`
    (paper A.5); `train=False` uses the first sentence. Randomness comes from `seed` (mixed
    with the worker seed in DataLoader workers). `prompt`, when given, replaces every sample's
    sentences with that one string: a control that shows how much a model relies on the text.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        image_size: int | None = 256,
        train: bool = False,
        augment: bool | None = None,
        seed: int = 0,
        skip_bad: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        prompt: str | None = None,
    ) -> None:
        if prompt is not None and not prompt.strip():
            raise DataError("prompt is empty: give the constant prompt text, or None")
        self.root = Path(root)
        self.split = split
        self.image_size = None if image_size is None else int(image_size)
        self.train = train
        self.augment = train if augment is None else augment
        self.seed = seed
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.name = self.root.resolve().name
        self.skipped: list[Skipped] = []
        self._bad: set[int] = set()
        self._generator: torch.Generator | None = None
        self._generator_key: int | None = None
        # target names the split's JSON lists in "categories" (a split may lack some of them)
        self.categories: tuple[str, ...] = ()

        if not self.root.is_dir():
            raise DataError(f"{self.root}: data set folder not found")
        splits = list_splits(self.root)
        if split not in splits:
            raise DataError(
                f"{self.root}: unknown split {split!r}; available: {', '.join(splits) or 'none'}"
                " (a split needs a <split>/ and a <split>_mask/ folder)"
            )
        json_path = self.root / f"{split}.json"
        found = self._index_json(json_path) if json_path.is_file() else self._index_names()
        self.samples: list[Sample] = self._check_headers(found)
        if prompt is not None:
            self.samples = [replace(sm, sentences=(prompt,)) for sm in self.samples]
        if self.skipped:
            log.warning("%s [%s]: skipped %d bad samples", self.root, split, len(self.skipped))
        if not self.samples:
            raise DataError(
                f"{self.root}: split {split!r} has no usable masks"
                + (f" ({len(self.skipped)} skipped as bad)" if self.skipped else "")
            )

    @property
    def target_names(self) -> list[str]:
        """Every target name of the data set, sorted: the samples' and the JSON's categories
        (so a name that only the test split holds, e.g. an absent one, is still known)."""
        return sorted({sample.target for sample in self.samples} | set(self.categories))

    # -- indexing -----------------------------------------------------------------------
    @property
    def image_dir(self) -> Path:
        return self.root / self.split

    @property
    def mask_dir(self) -> Path:
        return self.root / f"{self.split}_mask"

    @property
    def instance_dir(self) -> Path:
        """Instance maps (16-bit, one id per object), named like the masks; optional."""
        return self.root / f"{self.split}_instances"

    def instance_path(self, sample: Sample) -> Path | None:
        """The instance map of a sample's mask, None when the data set has none."""
        path = self.instance_dir / sample.mask_path.relative_to(self.mask_dir)
        return path if path.is_file() else None

    def _index_names(self) -> list[tuple[Path, Sample | DataError]]:
        images = _image_files(self.image_dir)
        found: list[tuple[Path, Sample | DataError]] = []
        for mask_path in sorted(self.mask_dir.iterdir()):
            if mask_path.name.startswith(".") or mask_path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            match = _image_for_mask(mask_path.stem, images)
            if match is None:
                guess = mask_path.stem.rsplit("_", 1)[0]
                problem = DataError(
                    f"{mask_path}: no image for this mask in {self.image_dir} (expected e.g. "
                    f"{guess}.png: a mask is named <image stem>_<target>.png)"
                )
                found.append((mask_path, problem))
                continue
            stem, target = match
            modality, site = parse_image_stem(stem)
            found.append(
                (
                    mask_path,
                    Sample(
                        images[stem],
                        mask_path,
                        target,
                        modality,
                        site,
                        (default_prompt(target, site, modality),),
                    ),
                )
            )
        return found

    def _index_json(self, json_path: Path) -> list[tuple[Path, Sample | DataError]]:
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            annotations = data["annotations"]
            image_names = {img["id"]: img["file_name"] for img in data.get("images", [])}
            slices = {img["file_name"]: _slice_of(img, json_path)
                      for img in data.get("images", []) if "volume" in img}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{json_path}: not a readable JSON file ({err})") from err
        except (KeyError, TypeError) as err:
            raise DataError(
                f"{json_path}: expected COCO-like 'images' and 'annotations' lists ({err!r})"
            ) from err
        categories = {
            c.get("id"): c.get("name") for c in data.get("categories", []) if isinstance(c, dict)
        }
        self.categories = tuple(str(name) for name in categories.values() if name)
        found: list[tuple[Path, Sample | DataError]] = []
        for number, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "mask_file" not in ann:
                raise DataError(f"{json_path}: annotation {number} has no 'mask_file'")
            image_name = image_names.get(ann.get("image_id"), ann.get("file_name"))
            if image_name is None:
                raise DataError(
                    f"{json_path}: annotation {number} ({ann['mask_file']}) names no image "
                    "(no known 'image_id' and no 'file_name')"
                )
            mask_path = _inside(self.mask_dir, ann["mask_file"], json_path, "mask_file")
            image_path = _inside(self.image_dir, image_name, json_path, "image file_name")
            image_stem, mask_stem = image_path.stem, mask_path.stem
            if mask_stem.startswith(image_stem + "_"):
                target = mask_stem[len(image_stem) + 1 :].replace("+", " ")
            else:
                target = str(categories.get(ann.get("category_id")) or mask_stem)
            modality, site = parse_image_stem(image_stem)
            sentences = tuple(
                str(s.get("sent") or s.get("raw")).strip()
                for s in ann.get("sentences") or []
                if isinstance(s, dict) and (s.get("sent") or s.get("raw"))
            ) or (default_prompt(target, site, modality),)
            found.append(
                (
                    mask_path,
                    Sample(
                        image_path,
                        mask_path,
                        target,
                        modality,
                        site,
                        sentences,
                        _area_fraction(ann.get("area_fraction")),
                        *slices.get(image_name, (None, None)),
                    ),
                )
            )
        return found

    def _check_headers(self, found: list[tuple[Path, Sample | DataError]]) -> list[Sample]:
        """Keep samples whose image and mask exist, open, match in size and fit the limit."""
        shapes: dict[Path, tuple[int, int] | DataError] = {}
        kept: list[Sample] = []
        for mask_path, item in found:
            try:
                if isinstance(item, DataError):
                    raise item
                if item.image_path not in shapes:
                    try:
                        shapes[item.image_path] = image_shape(
                            item.image_path, max_pixels=self.max_pixels
                        )
                    except DataError as err:
                        shapes[item.image_path] = err
                image_hw = shapes[item.image_path]
                if isinstance(image_hw, DataError):
                    raise image_hw
                mask_hw = image_shape(item.mask_path, max_pixels=self.max_pixels)
                if mask_hw != image_hw:
                    raise DataError(
                        f"{item.mask_path}: mask is {mask_hw[1]}x{mask_hw[0]} but its image "
                        f"{item.image_path.name} is {image_hw[1]}x{image_hw[0]}"
                    )
                kept.append(item)
            except DataError as err:
                if not self.skip_bad:
                    raise
                self._record_skip(mask_path, err)
        return kept

    def _record_skip(self, mask_path: Path, err: DataError) -> None:
        self.skipped.append(Skipped(str(mask_path), str(err)))
        log.warning("skipping bad sample: %s", err)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.skip_bad:
            return self._load([index])[0]
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            if i in self._bad:
                continue
            try:
                return self._load([i])[0]
            except DataError as err:
                self._bad.add(i)
                self._record_skip(self.samples[i].mask_path, err)
        raise DataError(f"{self.root}: every sample of split {self.split!r} failed to load")

    def _rng(self) -> torch.Generator:
        """This process's generator: `seed`, mixed with the worker's seed inside a DataLoader."""
        info = get_worker_info()
        key = None if info is None else int(info.seed)
        if self._generator is None or key != self._generator_key:
            self._generator = torch.Generator()
            mixed = self.seed if key is None else (self.seed * 0x9E3779B1 + key) % 2**63
            self._generator.manual_seed(mixed)
            self._generator_key = key
        return self._generator

    def load_group(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """`[self[i] for i in indices]` for items of one image, with that image read and
        resized once instead of once per item (an image with K masks is one decode, not K).
        Item by item where the items' images differ or `skip_bad` meets a bad sample."""
        if (any(i in self._bad for i in indices)
                or len({self.samples[i].image_path for i in indices}) > 1):
            return [self[i] for i in indices]
        try:
            return self._load(indices)
        except DataError:
            if not self.skip_bad:
                raise
            return [self[i] for i in indices]

    def _load(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The items of `indices`, all of one image, which is read and resized once (items
        without augmentation share its tensor); each item's prompt draw and augmentation
        come in the order item-by-item loading takes them."""
        samples = [self.samples[i] for i in indices]
        image = read_image(samples[0].image_path, max_pixels=self.max_pixels)
        masks = [read_mask(sample.mask_path, max_pixels=self.max_pixels) for sample in samples]
        for sample, mask in zip(samples, masks):
            if image.shape[:2] != mask.shape:
                raise DataError(
                    f"{sample.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its "
                    f"image {sample.image_file} is {image.shape[1]}x{image.shape[0]}"
                )
        # Conversions in numpy: torch's threaded kernels cost more than they save on one item.
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))
        masks_t = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))  # (K, 1, H, W)
        if self.image_size is not None:
            image_t, masks_t = _resize(image_t, masks_t, self.image_size)
        items = []
        for sample, mask, mask_t in zip(samples, masks, masks_t):
            pick = 0
            if self.train and len(sample.sentences) > 1:
                pick = int(torch.randint(len(sample.sentences), (), generator=self._rng()))
            item_image = image_t
            if self.augment:
                item_image, mask_t = random_augment(image_t, mask_t, self._rng())
            items.append({
                "image": item_image,
                "mask": mask_t,
                "prompt": sample.sentences[pick],
                "target": sample.target,
                "modality": sample.modality,
                "site": sample.site,
                "image_file": sample.image_file,
                "mask_file": sample.mask_file,
                "area": float(mask.mean()),
                "dataset": self.name,
                "mask_path": str(sample.mask_path),
                "instances_path": str(self.instance_path(sample) or ""),
                "volume": sample.volume or "",
                "slice": -1 if sample.slice is None else sample.slice,
            })
        return items


def _resize(image: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Resize image (3, H, W) and mask (1, H, W), or masks (K, 1, H, W), to (size, size);
    masks stay 0/1 and a non-empty one keeps at least one pixel (`crops.resample`)."""
    return resample(image, mask, (size, size))


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors stacked ("image" (B, 3, S, S), "mask" (B, 1, S, S)), others listed.

    (torch's default collate also works, but turns "area" into a float64 tensor.)
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {
        key: torch.stack([item[key] for item in batch])
        if isinstance(batch[0][key], Tensor)
        else [item[key] for item in batch]
        for key in batch[0]
    }
