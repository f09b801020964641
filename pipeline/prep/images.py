"""Image folders ``root/<class>/*.png|jpg``: read with Spark's binaryFile, decoded in tasks."""
from __future__ import annotations

import io
from functools import partial

from pipeline.config import DataConfig
from pipeline.prep.sources import RawData, SourceError, list_input_files

IMAGE_GLOB = "*.{png,PNG,jpg,JPG,jpeg,JPEG,bmp,gif}"
DECODED_DDL = "path string, label string, _image array<int>, _error string"
# The split hash uses <class>/<file>, so moving the root folder keeps every row's split.
KEY_PATTERN = r"/([^/]+/[^/]+)$"


def decode_batches(batches, *, height: int, width: int, channels: int):
    """mapInArrow body: decode + resize each image with Pillow to [C, H, W] uint8 values.

    A file Pillow cannot read gets ``_error`` (the decoder's message) instead of a crash,
    so it lands in rejected/ with its path.
    """
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    size = channels * height * width
    for batch in batches:
        paths = batch.column("path").to_pylist()
        contents = batch.column("content").to_pylist()
        labels = batch.column("label").to_pylist()
        pixels, errors, valid = [], [], []
        for content in contents:
            try:
                with Image.open(io.BytesIO(content)) as img:
                    img = img.convert(mode).resize((width, height), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)
                arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
                pixels.append(arr.reshape(-1).astype(np.int32))
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
            [pa.array(paths, pa.string()), pa.array(labels, pa.string()), images, pa.array(errors, pa.string())],
            names=["path", "label", "_image", "_error"],
        )


def read_images(spark, data: DataConfig) -> RawData:
    """Rows ``path, label, _image, _error``; the label is the image's parent folder name."""
    from pyspark.sql import functions as F

    from pipeline.prep import features

    root = data.source.path
    files = [f.uri for f in list_input_files(root)]
    img = data.image
    raw = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("recursiveFileLookup", "true")
        .load(root)
        .select(
            "path",
            "content",
            F.regexp_extract("path", r"/([^/]+)/[^/]+$", 1).alias("label"),
        )
    )
    decoded = raw.mapInArrow(partial(decode_batches, height=img.height, width=img.width, channels=img.channels), DECODED_DDL)
    decoded = decoded.withColumn("relpath", F.regexp_extract("path", KEY_PATTERN, 1))
    if not any(f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif")) for f in files):
        raise SourceError(f"{root}: no image files (png, jpg, bmp, gif) found; expected root/<class>/<image>")
    builder = features.DecodedImage([img.channels, img.height, img.width])
    return RawData(decoded, ["path", "label"], "label", ["relpath"], files, [builder])
