"""How lossy is a JPEG copy of CIFAR-10? Quality and chroma subsampling of every image in an archive.

    python scripts/cifar_jpeg_info.py ../shared/data/cifar10-jpeg.tar.gz

The development machines' CIFAR-10 (``../shared/data``) is a mirror that stores each image as a
JPEG; ``prepare_cifar10.py`` decodes it into the canonical ``cifar-10-batches-py`` layout, so the
pixels every model here trains and is tested on carry that compression. This prints what the
encoder did: the IJG quality each image's luminance quantisation table corresponds to, its chroma
subsampling, and the mean file size (a raw 32×32 RGB image is 3,072 bytes).
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from collections import Counter

import numpy as np

# the IJG (libjpeg) base luminance table, natural order; quality q scales it by 5000/q (q < 50) or 200 - 2q
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)  # fmt: skip
_SAMPLING = {-1: "unknown", 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def ijg_quality(luma_table: list[int]) -> int | None:
    """The IJG quality (1..100) whose scaled base table equals ``luma_table`` (natural order), or None."""
    table = np.asarray(luma_table)
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        if np.array_equal(np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255), table):
            return q
    return None


def main(argv: list[str] | None = None) -> int:
    from PIL import Image, JpegImagePlugin  # Pillow: only this script needs it

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", help="a .tar.gz of .jpg images (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    args = parser.parse_args(argv)
    quality, sampling, sizes = Counter(), Counter(), []
    try:
        with tarfile.open(args.archive) as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg")):
                    continue
                data = tar.extractfile(member).read()
                image = Image.open(io.BytesIO(data))
                quality[ijg_quality(list(image.quantization[0]))] += 1  # Pillow: natural (row-major) order
                sampling[_SAMPLING.get(JpegImagePlugin.get_sampling(image), "unknown")] += 1
                sizes.append(len(data))
    except (OSError, tarfile.TarError) as err:
        print(f"error: cannot read {args.archive}: {err}", file=sys.stderr)
        return 2
    if not sizes:
        print(f"error: no .jpg images in {args.archive}", file=sys.stderr)
        return 2
    print(f"images: {len(sizes):,}")
    named = {"non-IJG table" if q is None else q: n for q, n in quality.most_common()}
    print("IJG quality: " + ", ".join(f"{q} ({n:,})" for q, n in named.items()))
    print("chroma subsampling: " + ", ".join(f"{s} ({n:,})" for s, n in sampling.most_common()))
    print(f"mean file size: {np.mean(sizes):.0f} bytes (raw 32x32 RGB: 3,072)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
