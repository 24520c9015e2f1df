"""Image imports: decoding checks, PNG encoding of raw arrays, and the parsers for image files,
image-folder zips and npz arrays. Pure functions over file-like objects; nothing is written.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.services.importers.rows import Problem, RawRow, UploadedFile

# Formats Pillow may try. Naming them keeps Pillow from probing exotic decoders on untrusted bytes.
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
UNLABELED_FOLDER = "unlabeled"
_IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


class _Rejected(ValueError):
    pass


def _match_pillow_limit(max_pixels: int) -> None:
    # Pillow refuses images above 2 * MAX_IMAGE_PIXELS while opening them. Our own check (below,
    # before any pixel is decoded) enforces settings.max_image_pixels; Pillow's global guard is only
    # raised to match it so that it never rejects what the settings allow.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def inspect_image(data: bytes, *, max_pixels: int, decode: bool = True) -> str:
    """Open (and with ``decode``, fully decode) an encoded image; returns its MIME type.

    Raises ValueError naming the problem: not an image, unsupported format, too many pixels,
    corrupt or truncated data.
    """
    _match_pillow_limit(max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _Rejected(f"image is {width}x{height} pixels, over the limit of {max_pixels} pixels")
            if decode:
                image.load()
            fmt = image.format
    except _Rejected:
        raise
    except UnidentifiedImageError:
        raise ValueError(f"not a readable image (supported: {', '.join(SUPPORTED_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image has too many pixels: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on corrupt input; all mean the same
        raise ValueError(f"corrupt image: {exc}") from None
    return Image.MIME.get(fmt or "", f"image/{(fmt or 'octet-stream').lower()}")


def encode_png(pixels: np.ndarray, *, max_pixels: int) -> bytes:
    """Lossless PNG of an H×W or H×W×C (C in 1, 3, 4) uint8 array."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, not {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"an image must be HxW or HxWxC with C in 1, 3, 4; got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    if height * width > max_pixels:
        raise ValueError(f"image is {width}x{height} pixels, over the limit of {max_pixels} pixels")
    buffer = io.BytesIO()
    # A fixed compression level keeps the bytes (hence the sha256 used for dedup) stable across imports.
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# --- image files -------------------------------------------------------------------------------


def iter_image_files(
    files: list[UploadedFile], *, labels: dict[str, Any] | None, max_item_bytes: int
) -> Iterator[RawRow | Problem]:
    """One row per uploaded image file; ``labels`` maps file names to classes."""
    labels = labels or {}
    names = [f.filename for f in files]
    seen: set[str] = set()
    for upload in files:
        name = upload.filename
        ref = {"file": name}
        if name in labels and name in seen:
            yield Problem(ref, "two uploaded files have this name, so its entry in 'labels' is ambiguous")
            continue
        seen.add(name)
        upload.file.seek(0)
        data = upload.file.read(max_item_bytes + 1)
        if len(data) > max_item_bytes:
            size = upload.size if upload.size is not None else f"over {max_item_bytes}"
            yield Problem(ref, f"file is {size} bytes, over the limit of {max_item_bytes}")
            continue
        yield RawRow(ref=ref, data=data, label=labels.get(name), extra={"filename": name})
    missing = sorted(set(labels) - set(names))
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10])
        yield Problem({"field": "labels"}, f"names files that were not uploaded: {shown}")


# --- zip in image-folder layout ----------------------------------------------------------------


def _zip_parts(name: str) -> list[str] | None:
    """Path components of a member, or None for members to skip (folders, OS metadata files)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if not parts or name.endswith("/"):
        return None
    if any(p.startswith(".") or p in _IGNORED_NAMES for p in parts):
        return None
    return parts


def _auto_root(paths: list[list[str]], classes: Iterable[str]) -> list[str]:
    """Strip wrapper folders (``cifar/train/<class>/...``) while that is unambiguous: every file
    sits below the same single folder, and that folder is neither a class nor ``unlabeled``."""
    known = set(classes) | {UNLABELED_FOLDER}
    prefix: list[str] = []
    depth = 0
    while paths:
        if any(len(p) <= depth + 1 for p in paths):
            break  # a file at this level: the layout starts here
        first = {p[depth] for p in paths}
        if len(first) != 1:
            break
        (folder,) = first
        if folder in known:
            break
        prefix.append(folder)
        depth += 1
    return prefix


def iter_zip(
    fileobj: IO[bytes],
    *,
    name: str,
    classes: tuple[str, ...],
    max_item_bytes: int,
    root: str | None = None,
) -> Iterator[RawRow | Problem]:
    """Rows of a zip in image-folder layout: ``<class>/<file>`` is labeled with the folder's class;
    files at the root or in ``unlabeled/`` are unlabeled. ``root`` names the folder inside the zip
    that holds that layout; without it a single wrapper folder chain is skipped when unambiguous."""
    fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        yield Problem({"file": name}, f"not a readable zip archive: {exc}")
        return
    with archive:
        members: list[tuple[zipfile.ZipInfo, list[str]]] = []
        for info in archive.infolist():
            parts = None if info.is_dir() else _zip_parts(info.filename)
            if parts is None:
                continue
            if any(p == ".." for p in parts) or info.filename.startswith(("/", "\\")):
                yield Problem({"file": info.filename}, "unsafe path in the zip")
                continue
            members.append((info, parts))

        if root is not None:
            prefix = [p for p in root.replace("\\", "/").split("/") if p]
            members = [(i, p) for i, p in members if p[: len(prefix)] == prefix and len(p) > len(prefix)]
            if not members:
                yield Problem({"field": "root"}, f"the zip has no files under the folder {root!r}")
                return
        else:
            prefix = _auto_root([p for _, p in members], classes)
        if not members:
            yield Problem({"file": name}, "the zip holds no image files")
            return

        reported_folders: set[str] = set()
        class_set = set(classes)
        for info, parts in members:
            relative = parts[len(prefix) :]
            ref = {"file": info.filename}
            if len(relative) == 1:
                label = None
            elif len(relative) == 2:
                folder = relative[0]
                if folder in class_set:
                    label = folder
                elif folder == UNLABELED_FOLDER:
                    label = None
                else:
                    where = "/".join(prefix + [folder]) + "/"
                    if where not in reported_folders:
                        reported_folders.add(where)
                        yield Problem(
                            {"file": where},
                            f"folder {folder!r} is not a class of this project nor {UNLABELED_FOLDER!r}; "
                            "class folders must sit at the top of the zip, or name their parent with 'root'",
                        )
                    continue
            else:
                # Reported once per top folder: e.g. train/ and test/ side by side under a wrapper.
                where = "/".join(prefix + [relative[0]]) + "/"
                if where not in reported_folders:
                    reported_folders.add(where)
                    yield Problem(
                        {"file": where},
                        "holds nested folders; expected <class>/<file>. If the class folders are inside it, "
                        "name it with 'root'",
                    )
                continue
            if info.file_size > max_item_bytes:
                yield Problem(ref, f"file is {info.file_size} bytes, over the limit of {max_item_bytes}")
                continue
            try:
                with archive.open(info) as member:
                    # Read one byte past the limit: the size in the zip's directory may lie.
                    data = member.read(max_item_bytes + 1)
            except Exception as exc:  # noqa: BLE001 - zipfile/zlib raise many types on corrupt members
                yield Problem(ref, f"cannot be read from the zip: {exc}")
                continue
            if len(data) > max_item_bytes:
                yield Problem(ref, f"file is over the limit of {max_item_bytes} bytes")
                continue
            yield RawRow(ref=ref, data=data, label=label, extra={"path": info.filename})


# --- npz arrays --------------------------------------------------------------------------------

NPZ_ARRAYS = ("x", "y", "ids")


def _peek_npy(archive: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of one array from its header, without reading (decompressing) its data."""
    try:
        with archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        return tuple(shape), np.dtype(dtype)
    except Exception:  # noqa: BLE001 - fall back to loading; np.load reports the real problem
        return None


def iter_npz(
    fileobj: IO[bytes],
    *,
    name: str,
    max_pixels: int,
    max_array_bytes: int,
) -> Iterator[RawRow | Problem]:
    """Rows of an npz with ``x`` (N×H×W or N×H×W×C uint8), optional ``y`` (class indices or names)
    and optional ``ids`` (external ids). Problems with the arrays themselves refer to the file."""
    file_ref = {"file": name}
    fileobj.seek(0)
    try:
        npz = np.load(fileobj, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises many types on a bad archive
        yield Problem(file_ref, f"not a readable .npz file: {exc}")
        return
    if not isinstance(npz, np.lib.npyio.NpzFile):
        yield Problem(file_ref, "expected an .npz archive of arrays, got a single array")
        return
    with npz:
        keys = set(npz.files)
        if "x" not in keys:
            yield Problem(file_ref, f"the npz needs an array named 'x' (found: {', '.join(sorted(keys)) or 'none'})")
            return
        unknown = sorted(keys - set(NPZ_ARRAYS))
        if unknown:
            yield Problem(file_ref, f"unexpected arrays {unknown}; the npz may hold only x, y and ids")
            return

        header = _peek_npy(npz.zip, "x")
        if header is not None:
            shape, dtype = header
            problem = _check_x(shape, dtype, max_pixels, max_array_bytes)
            if problem:
                yield Problem(file_ref, problem)
                return
        try:
            x = npz["x"]
            y = npz["y"] if "y" in keys else None
            ids = npz["ids"] if "ids" in keys else None
        except Exception as exc:  # noqa: BLE001 - e.g. object arrays (need pickle), corrupt members
            yield Problem(file_ref, f"cannot read the arrays: {exc}")
            return
        problem = _check_x(x.shape, x.dtype, max_pixels, max_array_bytes)
        if problem:
            yield Problem(file_ref, problem)
            return
        n = x.shape[0]
        for key, array in (("y", y), ("ids", ids)):
            if array is None:
                continue
            if array.shape != (n,):
                yield Problem(file_ref, f"'{key}' must have shape ({n},) like x's first axis, not {array.shape}")
                return
            if array.dtype.kind not in "iuU":
                yield Problem(file_ref, f"'{key}' must hold integers or strings, not {array.dtype}")
                return

        for i in range(n):
            label = None
            if y is not None:
                label = int(y[i]) if y.dtype.kind in "iu" else str(y[i])
            external_id = None
            if ids is not None:
                external_id = int(ids[i]) if ids.dtype.kind in "iu" else str(ids[i])
            yield RawRow(ref={"row": i}, pixels=x[i], label=label, external_id=external_id, extra={"npz_index": i})


def _check_x(shape: tuple[int, ...], dtype: np.dtype, max_pixels: int, max_array_bytes: int) -> str | None:
    if dtype != np.uint8:
        return f"'x' must be uint8, not {dtype}"
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
        return f"'x' must be NxHxW or NxHxWxC with C in 1, 3, 4; got shape {shape}"
    if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
        return f"'x' holds no images (shape {shape})"
    if shape[1] * shape[2] > max_pixels:
        return f"images are {shape[2]}x{shape[1]} pixels, over the limit of {max_pixels} pixels"
    nbytes = int(np.prod(shape, dtype=np.int64))
    if nbytes > max_array_bytes:
        return f"'x' is {nbytes} bytes uncompressed, over the upload limit of {max_array_bytes}"
    return None
