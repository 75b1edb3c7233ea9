"""Small image and annotation fixtures for the reader, transform and pipeline tests.

Everything is written by the tests themselves (cv2 JPEG/PNG files, JSON), so the tests do not
depend on the synthetic data generator. `constant_jpeg` hand-writes a baseline JPEG with any
number of colour components (1 grey, 3 YCbCr, 4 CMYK), which OpenCV cannot write.
"""

from __future__ import annotations

import json
import os
import struct

import cv2
import numpy as np


def _quality(extension, quality) -> list:
    """cv2's write parameters: the JPEG quality for a JPEG, none otherwise (cv2 warns)."""
    jpeg = str(extension).lower().endswith((".jpg", ".jpeg"))
    return [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else []


def write_image(path, image_rgb, quality=100) -> str:
    """Write an RGB uint8 image with cv2 (format from the extension, `quality` for a JPEG);
    returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                     _quality(path, quality))
    assert ok, path
    return str(path)


def encode(image_rgb, extension=".jpg", quality=100) -> bytes:
    """Encode an RGB uint8 image to file bytes with cv2 (`quality` for a JPEG)."""
    ok, data = cv2.imencode(extension, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                            _quality(extension, quality))
    assert ok
    return data.tobytes()


def blob_image(height, width, points, colors, sigma=2.0, background=0) -> np.ndarray:
    """An RGB uint8 image with a Gaussian blob of peak 255 in `colors[i]` at each (x, y) point.

    Points are continuous pixel coordinates with pixel centres at integers.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.full((height, width, 3), float(background))
    for (x, y), color in zip(points, colors):
        blob = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
        image = np.maximum(image, blob[..., None] * np.asarray(color, np.float64))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def coco_keypoints(keypoints_xyv) -> list:
    """[K, 3] array -> the flat COCO list of x, y, v (v as int)."""
    flat = []
    for x, y, v in keypoints_xyv:
        flat += [float(x), float(y), int(v)]
    return flat


def write_coco(path, images, annotations, keypoint_names, categories=None) -> str:
    """Write a COCO keypoint file with a person category listing `keypoint_names`."""
    if categories is None:
        categories = [{"id": 1, "name": "person", "supercategory": "person",
                       "keypoints": list(keypoint_names), "skeleton": []}]
    with open(path, "w") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    return str(path)


# A hand-written baseline JPEG of one constant colour -------------------------------------------

_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)  # JPEG Annex K.3 luminance DC table
_DC_VALUES = tuple(range(12))
_AC_BITS = (0, 2) + (0,) * 14  # two 2-bit codes: end-of-block (0x00) and one unused symbol
_AC_VALUES = (0x00, 0x01)


def _segment(marker, payload) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def _huffman_codes(bits, values) -> dict:
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[values[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


def constant_jpeg(values, height=16, width=16) -> bytes:
    """A baseline JPEG whose every pixel stores `values` (one byte per component).

    1 component is greyscale, 3 are YCbCr, 4 are CMYK (no Adobe marker; OpenCV/libjpeg read the
    stored bytes as inverted CMYK, so (255, 255, 255, 255) is white and (0, 255, 255, 255)
    is cyan). Blocks hold only a DC coefficient (quantiser 8, so DC = value - 128).
    """
    count = len(values)
    out = b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([8] * 64))
    out += _segment(0xC0, struct.pack(">BHHB", 8, height, width, count)
                    + b"".join(bytes([i + 1, 0x11, 0]) for i in range(count)))
    out += _segment(0xC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALUES))
    out += _segment(0xC4, b"\x10" + bytes(_AC_BITS) + bytes(_AC_VALUES))
    out += _segment(0xDA, bytes([count]) + b"".join(bytes([i + 1, 0]) for i in range(count))
                    + b"\x00\x3f\x00")
    dc_codes = _huffman_codes(_DC_BITS, _DC_VALUES)
    end_of_block = _huffman_codes(_AC_BITS, _AC_VALUES)[0x00]
    bits = []

    def put(code, length):
        bits.extend((code >> (length - 1 - i)) & 1 for i in range(length))

    previous = [0] * count
    for _ in range(((height + 7) // 8) * ((width + 7) // 8)):
        for c, value in enumerate(values):
            dc = int(value) - 128
            diff, previous[c] = dc - previous[c], dc
            size = abs(diff).bit_length()
            put(*dc_codes[size])
            if size:
                put(diff if diff > 0 else diff + (1 << size) - 1, size)
            put(*end_of_block)
    bits.extend([1] * (-len(bits) % 8))
    scan = bytearray()
    for i in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[i : i + 8])), 2)
        scan.append(byte)
        if byte == 0xFF:
            scan.append(0)  # byte stuffing
    return out + bytes(scan) + b"\xff\xd9"
