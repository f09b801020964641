"""Image folders ``root/<class>/[any/sub/folders/]*.png|jpg``: read with Spark's
binaryFile, decoded in tasks."""
from __future__ import annotations

import io
import re
from functools import partial

from pipeline.config import DataConfig
from pipeline.prep.raw import RawData, SourceError, list_input_files

IMAGE_GLOB = "*.{png,PNG,jpg,JPG,jpeg,JPEG,bmp,gif}"
DECODED_DDL = "path string, label string, _image array<int>, _error string"
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def decode_image(content: bytes, channels: int, height: int, width: int):
    """One encoded image -> uint8 [C, H, W], as a viewer shows it.

    EXIF orientation is applied (``ImageOps.exif_transpose``: camera pictures are stored
    sideways); palette, grey+alpha, RGBA and CMYK images convert to the configured mode the
    way Pillow's ``convert`` does (alpha dropped); 16-bit images are scaled to 8 bits
    (value / 257: Pillow's ``convert`` would clip everything above 255 to white).

    Raises:
        ValueError, OSError: an image that cannot be decoded (a rejected row).
    """
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(content)) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in _SIXTEEN_BIT:
            wide = np.asarray(img).astype(np.int64)
            img = Image.fromarray(((wide + 128) // 257).clip(0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            raise ValueError("floating-point image (mode F): save it with 8 or 16 bits per channel")
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # what Pillow asks for: transparency defined by palette bytes
        img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def decode_batches(batches, *, height: int, width: int, channels: int):
    """mapInArrow body: decode + resize each image with Pillow to [C, H, W] uint8 values.

    A file Pillow cannot read gets ``_error`` (the decoder's message) instead of a crash,
    so it lands in rejected/ with its path.
    """
    import numpy as np
    import pyarrow as pa

    size = channels * height * width
    for batch in batches:
        paths = batch.column("path").to_pylist()
        contents = batch.column("content").to_pylist()
        labels = batch.column("label").to_pylist()
        relpaths = batch.column("relpath").to_pylist()
        pixels, errors, valid = [], [], []
        for content in contents:
            try:
                pixels.append(decode_image(content, channels, height, width).reshape(-1).astype(np.int32))
                errors.append(None)
                valid.append(True)
            except Exception as err:  # noqa: BLE001 -- any decoder failure is a rejected row
                pixels.append(np.zeros(0, np.int32))
                errors.append(f"{type(err).__name__}: {err}")
                valid.append(False)
        offsets = np.zeros(len(pixels) + 1, np.int32)
        np.cumsum([len(p) for p in pixels], out=offsets[1:])
        flat = np.concatenate(pixels) if pixels else np.zeros(0, np.int32)
        mask = pa.array([not v for v in valid])
        images = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)
        assert all(len(p) == size for p, v in zip(pixels, valid) if v)
        yield pa.RecordBatch.from_arrays(
            [pa.array(paths, pa.string()), pa.array(labels, pa.string()), images, pa.array(errors, pa.string()),
             pa.array(relpaths, pa.string())],
            names=["path", "label", "_image", "_error", "relpath"],
        )


def read_images(spark, data: DataConfig) -> RawData:
    """Rows ``path, label, _image, _error``: the label is the first folder under the root
    (images may sit in sub-folders of it); the split key is the path under the root, so
    moving the root keeps every row's split."""
    from pyspark.sql import functions as F

    from pipeline.prep import features

    root = data.source.path.rstrip("/")
    files = [f.uri for f in list_input_files(root)]
    img = data.image
    # Spark names files by URI (file:/..., s3a://bucket/...): match the root's path part.
    under_root = re.escape(re.sub(r"^[a-zA-Z][\w+.-]*://[^/]*", "", root)) + r"/(.+)$"
    raw = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("recursiveFileLookup", "true")
        .load(root)
        .withColumn("relpath", F.regexp_extract("path", under_root, 1))
        # An image directly under the root has no class folder: no label, a rejected row.
        .select("path", "content", "relpath",
                F.when(F.instr("relpath", "/") > 0, F.substring_index("relpath", "/", 1)).alias("label"))
    )
    decoded = raw.mapInArrow(partial(decode_batches, height=img.height, width=img.width, channels=img.channels),
                             DECODED_DDL + ", relpath string")
    if not any(f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")) for f in files):
        raise SourceError(f"{root}: no image files (png, jpg, bmp, gif) found; expected root/<class>/<image>")
    builder = features.DecodedImage([img.channels, img.height, img.width])
    return RawData(decoded, ["path", "label"], "label", ["relpath"], files, [builder])
