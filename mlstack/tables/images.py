"""A ZIP of images, one folder per class -> ImageSet, read in memory with every size capped (never extracted to disk)."""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mlstack import imaging
from mlstack.errors import MlstackError
from mlstack.tables.limits import DEFAULT_LIMITS, TableLimits, TableTooLarge, TableUnreadable

CHUNK = 64 * 1024
IGNORED = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass
class ImageSet:
    """Images as grayscale uint8 thumbnails (long side <= ``TableLimits.image_side``), with their class labels."""

    classes: list[str]
    labels: np.ndarray  # int64 [n], index into ``classes``
    images: list[np.ndarray] = field(repr=False)  # uint8 [h, w] each
    names: list[str] = field(repr=False)  # the member name of each image

    def __len__(self) -> int:
        return len(self.images)

    def balance(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def to_array(self, height: int, width: int, *, polarity: str = "light_on_dark") -> np.ndarray:
        """float32 [n, height, width] in [0, 1], each image normalised as the serving path does (mlstack.imaging)."""
        spec = {"height": height, "width": width, "polarity": polarity}
        return np.stack([imaging.normalise(Image.fromarray(a, mode="L"), spec) for a in self.images])


def _member_names(zf: zipfile.ZipFile, limits: TableLimits) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > 2 * limits.max_images + 1000:
        raise TableTooLarge("zip_entries", 2 * limits.max_images + 1000, len(infos))
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_decompressed_bytes:
        raise TableTooLarge("decompressed_bytes", limits.max_decompressed_bytes, declared,
                            f"the ZIP declares {declared} bytes uncompressed; the limit is {limits.max_decompressed_bytes}")
    files = []
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
            raise TableUnreadable(f"unsafe path in the ZIP: '{name[:200]}'", "unsafe_path", name=name[:200])
        if stat.S_ISLNK(info.external_attr >> 16):
            raise TableUnreadable(f"the ZIP holds a symbolic link: '{name[:200]}'", "unsafe_path", name=name[:200])
        if info.is_dir() or name.startswith(IGNORED[0]) or parts[-1] in IGNORED[1:] or parts[-1].startswith("."):
            continue
        if info.flag_bits & 0x1:
            raise TableUnreadable(f"encrypted ZIP member '{name[:200]}'", "encrypted", name=name[:200])
        files.append(info)
    return files


def _class_of(names: list[str]) -> list[tuple[str, str]]:
    """(class, name) per file: its folder; one common top folder (a zipped parent directory) is skipped."""
    split = [n.split("/") for n in names]
    if split and all(len(p) >= 3 for p in split) and len({p[0] for p in split}) == 1:
        split = [p[1:] for p in split]
    out = []
    for parts, name in zip(split, names, strict=True):
        if len(parts) != 2:
            where = "at the top level" if len(parts) == 1 else "nested too deep"
            raise TableUnreadable(f"'{name[:200]}' is {where}: put the images in one folder per class (class/image.png)",
                                  "layout", name=name[:200])
        out.append((parts[0], name))
    return out


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int], limits: TableLimits) -> bytes:
    """The member's bytes, counting what is actually decompressed against the whole ZIP's budget."""
    buf = bytearray()
    with zf.open(info) as fh:
        while chunk := fh.read(CHUNK):
            budget[0] += len(chunk)
            if budget[0] > limits.max_decompressed_bytes:
                raise TableTooLarge("decompressed_bytes", limits.max_decompressed_bytes, f"more than {limits.max_decompressed_bytes}")
            if len(buf) + len(chunk) > limits.max_image_bytes:
                raise TableTooLarge("image_bytes", limits.max_image_bytes, f"more than {limits.max_image_bytes}",
                                    f"'{info.filename[:200]}' is larger than {limits.max_image_bytes} bytes")
            buf += chunk
    return bytes(buf)


def read_image_zip(data: bytes, limits: TableLimits = DEFAULT_LIMITS) -> ImageSet:
    if len(data) > limits.max_bytes:
        raise TableTooLarge("bytes", limits.max_bytes, len(data))
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise TableUnreadable(f"not a valid ZIP file: {exc}", "format") from exc
    with zf:
        infos = _member_names(zf, limits)
        if not infos:
            raise TableUnreadable("the ZIP holds no images", "no_images")
        if len(infos) > limits.max_images:
            raise TableTooLarge("images", limits.max_images, len(infos))
        by_name = {i.filename: i for i in infos}
        placed = _class_of(sorted(by_name))
        classes = sorted({c for c, _ in placed})
        budget, images, labels, names = [0], [], [], []
        for cls, name in placed:
            try:
                raw = _read(zf, by_name[name], budget, limits)
                img = imaging.decode(raw, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels,
                                     max_decode_pixels=limits.max_decode_pixels)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # bad CRC: a member lying about its size
                raise TableUnreadable(f"'{name[:200]}' could not be read from the ZIP: {exc}", "format", name=name[:200]) from exc
            except TableTooLarge:
                raise
            except MlstackError as exc:  # not an image, truncated, too many pixels
                if exc.status == 413:
                    raise TableTooLarge("image_pixels", limits.max_decode_pixels, exc.details.get("pixels", "?"),
                                        f"'{name[:200]}': {exc.message}") from exc
                raise TableUnreadable(f"'{name[:200]}': {exc.message}", "not_an_image", name=name[:200], code=exc.code) from exc
            img.thumbnail((limits.image_side, limits.image_side), Image.Resampling.BOX)
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(classes.index(cls))
            names.append(name)
    return ImageSet(classes=classes, labels=np.asarray(labels, dtype=np.int64), images=images, names=names)
