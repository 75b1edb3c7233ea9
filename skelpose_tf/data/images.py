"""Reading and decoding image files robustly (numpy + OpenCV, no TensorFlow).

`decode_image` turns the bytes of a JPEG or PNG file (or any format OpenCV reads) into an RGB
uint8 array, whatever the name of the file says: grayscale, CMYK and PNG content are all
converted to 3-channel RGB. What it cannot decode raises `ImageDecodeError` with a short reason
(empty, truncated, corrupt), which the readers and the data pipeline count and log instead of
crashing. `load_for_record` is that policy in one place: decode, check the size against the
annotation, count a skip or a colour/format repair in a `SkipReport`. `read_image_header` parses
only the first bytes of a file (JPEG SOF / PNG IHDR) to get the size and channel count without
decoding.

EXIF orientation is ignored on purpose (`cv2.IMREAD_IGNORE_ORIENTATION`): COCO and MPII
annotations are in the stored pixel grid, as the official HRNet code reads them.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import cv2
import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_END_MARKER = b"\xff\xd9"
# A complete JPEG ends with the end-of-image marker; allow this much trailing padding after it.
_JPEG_TAIL_BYTES = 4096
# JPEG start-of-frame markers (SOF0..SOF15 without DHT 0xC4, JPG 0xC8 and DAC 0xCC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Enough bytes to reach the JPEG frame header past a typical EXIF block.
_HEADER_BYTES = 1 << 16
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # BGR


class ImageDecodeError(Exception):
    """An image file that cannot be read or decoded; `reason` is a short, countable phrase."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What the first bytes of an image file say about it.

    Attributes:
        format: "jpeg" or "png".
        width: image width in pixels.
        height: image height in pixels.
        channels: colour components stored in the file (1 grey, 2 grey+alpha, 3 colour,
            4 CMYK for JPEG or RGBA for PNG).
    """

    format: str
    width: int
    height: int
    channels: int

    def conversion_note(self, file_name: str) -> str | None:
        """A short description when the content is not a plain colour image matching its name.

        Returns None for a 3-component JPEG named .jpg/.jpeg (or any name) and for a colour PNG
        named .png; otherwise e.g. "PNG content in a .jpg file" or "grayscale JPEG".
        """
        extension = os.path.splitext(file_name)[1].lower()
        notes = []
        if self.format == "png" and extension in (".jpg", ".jpeg"):
            notes.append(f"PNG content in a {extension} file")
        elif self.format == "jpeg" and extension == ".png":
            notes.append("JPEG content in a .png file")
        if self.channels in (1, 2):
            notes.append(f"grayscale {self.format.upper()}")
        elif self.channels == 4:
            notes.append("CMYK JPEG" if self.format == "jpeg" else "PNG with alpha")
        return ", ".join(notes) if notes else None


def read_image_header(data: bytes) -> ImageHeader | None:
    """Parse the size and channel count of a JPEG or PNG from its leading bytes.

    Args:
        data: the file's bytes (at least up to the JPEG frame header / PNG IHDR chunk).

    Returns:
        An `ImageHeader`, or None when the bytes are not a well-formed JPEG or PNG header.
    """
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 26 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        channels = _PNG_CHANNELS.get(data[25])
        if channels is None or width == 0 or height == 0:
            return None
        return ImageHeader("png", width, height, channels)
    if not data.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length field
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _SOF_MARKERS:
            if offset + 10 > len(data):
                return None
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            channels = data[offset + 9]
            if width == 0 or height == 0 or channels not in (1, 3, 4):
                return None
            return ImageHeader("jpeg", width, height, channels)
        if marker in (0xDA, 0xD9):  # start of scan or end of image before any frame header
            return None
        offset += 2 + length
    return None


def read_image_bytes(path: str) -> bytes:
    """The bytes of the file at `path`; raises `ImageDecodeError` when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise ImageDecodeError("missing image file") from None
    except OSError as error:
        raise ImageDecodeError(f"unreadable image file ({error.strerror or error})") from None


def decode_image(data: bytes, rgb: bool = True) -> tuple[np.ndarray, ImageHeader | None]:
    """Decode image bytes to RGB.

    Args:
        data: the bytes of a JPEG, PNG or other OpenCV-readable image file.
        rgb: False returns OpenCV's BGR channel order and saves a conversion of the whole image
            (the data pipeline converts only the part it crops).

    Returns:
        (image, header): `image` uint8 [H, W, 3] RGB (BGR if `rgb` is False) whatever the stored
        colour model (grey is replicated, CMYK converted, a stored alpha channel dropped);
        `header` from `read_image_header` (None for formats other than JPEG and PNG).

    Raises:
        ImageDecodeError: for an empty file, a JPEG without its end-of-image marker
            ("truncated JPEG"), or bytes the decoder rejects ("corrupt JPEG/PNG data",
            "undecodable data").
    """
    if not data:
        raise ImageDecodeError("empty image file")
    header = read_image_header(data)
    if header is not None and header.format == "jpeg":
        if data.rfind(_JPEG_END_MARKER, max(0, len(data) - _JPEG_TAIL_BYTES)) < 0:
            raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    if image is None:
        if header is None:
            raise ImageDecodeError("undecodable data (not a known image format)")
        raise ImageDecodeError(f"corrupt {header.format.upper()} data (decoder failed)")
    return (cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image), header


def read_image_size(path: str) -> tuple:
    """(height, width) of an image file, from its header when possible, else by decoding it.

    Raises:
        ImageDecodeError: the file is missing, unreadable or cannot be decoded.
    """
    try:
        with open(path, "rb") as file:
            header = read_image_header(file.read(_HEADER_BYTES))
    except FileNotFoundError:
        raise ImageDecodeError("missing image file") from None
    except OSError as error:
        raise ImageDecodeError(f"unreadable image file ({error.strerror or error})") from None
    if header is not None:
        return header.height, header.width
    image, _ = decode_image(read_image_bytes(path))
    return image.shape[:2]


def load_for_record(data, path, expected_size, where, report, rgb=True):
    """Decode an annotated image the way every reader of person records does, or report why not.

    The one policy of the data pipeline, the TFRecord converter and the evaluation subset: a
    file that cannot be read or decoded, or whose decoded size differs from the annotation, is
    a counted skip (`report.skip`, the `ImageDecodeError` reason or "image size differs from
    the annotation"); grey, CMYK, alpha and PNG-as-JPEG content is decoded, converted and
    counted as repaired (`report.repair`, once per path).

    Args:
        data: the file's bytes, or None to read `path`.
        path: the image file (read when `data` is None; named in the report).
        expected_size: (height, width) the annotation gives.
        where: the record(s) the image belongs to, for the report (e.g. "record 3").
        report: a `SkipReport` (anything with `skip` and `repair`).
        rgb: False returns OpenCV's BGR channel order (`decode_image`).

    Returns:
        uint8 [H, W, 3] (RGB, or BGR when `rgb` is False), or None when the image is skipped.
    """
    try:
        image, header = decode_image(read_image_bytes(path) if data is None else data, rgb=rgb)
    except ImageDecodeError as error:
        report.skip(error.reason, f"{where} ({path})")
        return None
    if tuple(image.shape[:2]) != tuple(int(v) for v in expected_size):
        report.skip("image size differs from the annotation",
                    f"{where} ({path}: decoded {image.shape[1]}x{image.shape[0]}, "
                    f"annotated {expected_size[1]}x{expected_size[0]})")
        return None
    note = None if header is None else header.conversion_note(path)
    if note:
        report.repair(f"{note}, decoded and converted to RGB", path)
    return image
