"""Training photographs for the transformation network: a folder of photos -> batches of random crops.

    crops = PhotoCrops("coco/train2014", size=256, seed=0)      # or PhotoCrops(None, ...) for the bundled ones
    x = crops.batch(4)        # (4, 3, 256, 256) float32 in the VGG input space, as handnst.preprocess makes
    state = crops.state()     # everything needed to continue the same sequence of crops (checkpoints)
    crops.set_state(state)

Each crop is drawn by four random numbers from one NumPy generator seeded with `seed`: which photo,
how large a square to cut (a fraction `scale` of the photo's shorter side: scale jitter), where, and
whether to mirror it left to right. The square is then resized to `size` x `size`. The same seed
gives the same crops, bit for bit, and the generator's state travels with a checkpoint so that a
resumed run sees exactly the crops it would have seen.

Any folder works: it is searched recursively (in sorted order, hidden files and folders left out)
and every file whose header Pillow can read is a photo. Files that are not (notes, a broken
download, a .DS_Store) are skipped and counted in one warning line; a folder with no photo at all is
an error. A photo that turns out to be corrupted only when it is decoded is skipped then, and drawn
around (counted in `crops.failed`).

With no folder, the photographs that ship in handnst/data/photos (public domain and CC0; see
handnst/data/README.md) are used, so training works offline on a fresh install. The two sample
photographs chelsea.jpg and coffee.jpg are *not* among them: they are kept for looking at what a
trained network does to photos it never saw.
"""

import os
import warnings

import numpy as np
from PIL import Image

from handnst import image as _image
from handnst.errors import InputError

BUNDLED_DIR = os.path.join(_image.DATA_DIR, "photos")
DEFAULT_SCALE = (0.5, 1.0)        # the crop's side, as a fraction of the photo's shorter side
CACHE_MAX_FILES = 64              # small folders are decoded once and kept in memory


def bundled_photos_dir():
    """The folder of training photographs that ship with handnst."""
    return BUNDLED_DIR


def _is_hidden(name):
    return name.startswith(".")


def scan_photos(folder):
    """(photos, skipped): every readable image file under `folder`, recursively and sorted, and the
    paths of the files that are not readable images. InputError if the folder itself is unusable."""
    shown = os.fspath(folder)
    if not os.path.exists(folder):
        raise InputError(f"the photo folder {shown!r} does not exist; check the path")
    if not os.path.isdir(folder):
        raise InputError(f"--data {shown!r} is a file, not a folder; give the folder that holds the photographs")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise InputError(f"the photo folder {shown!r} is not readable (permission denied)")
    photos, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            if _is_hidden(name):
                continue
            path = os.path.join(root, name)
            (photos if _readable_header(path) else skipped).append(path)
    return photos, skipped


def _readable_header(path):
    """Whether Pillow recognises the file as an image of a sane size (reads the header only)."""
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Exception:
            return False
    return 0 < width * height <= _image.MAX_PIXELS


class PhotoCrops:
    """Random square crops of a folder of photographs (see the module docstring).

    folder None: the bundled photographs. `size`: side of the crops in pixels. `scale`: the range of
    the crop's side as a fraction of the photo's shorter side. `flip`: mirror half of the crops.
    `convention`: the input space of the VGG19 weights (default Keras/Caffe). `warn(line)` is
    called once if files had to be skipped.
    """

    def __init__(self, folder=None, *, size, seed=0, scale=DEFAULT_SCALE, flip=True, convention=None, warn=None):
        size = int(size)
        if size < 4:
            raise InputError(f"the crop size must be at least 4 pixels, not {size}")
        lo, hi = (float(s) for s in scale)
        if not (0 < lo <= hi <= 1):
            raise InputError(f"the crop scale range must satisfy 0 < low <= high <= 1, not {scale!r}")
        self.folder = os.fspath(folder) if folder is not None else BUNDLED_DIR
        self.bundled = folder is None
        self.size, self.scale, self.flip = size, (lo, hi), bool(flip)
        self.convention = _image.resolve_convention(convention)
        self.photos, skipped = scan_photos(self.folder)
        self.skipped = len(skipped)
        if not self.photos:
            what = f"{len(skipped)} files, none of them a readable image" if skipped else "no files"
            raise InputError(f"the photo folder {self.folder!r} holds {what}; give a folder of photographs "
                             "(JPEG, PNG, ...), searched recursively")
        if skipped and warn is not None:
            example = os.path.relpath(skipped[0], self.folder)
            warn(f"warning: skipped {len(skipped)} of {len(skipped) + len(self.photos)} files under "
                 f"{self.folder} that are not readable images (e.g. {example})")
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.failed = set()
        self._cache = {} if len(self.photos) <= CACHE_MAX_FILES else None

    def __len__(self):
        return len(self.photos)

    # ------------------------------------------------------------------------------- state
    def state(self):
        """The generator's state (a JSON-friendly dict) and the photos found broken so far."""
        return {"bit_generator": self.rng.bit_generator.state, "failed": sorted(self.failed)}

    def set_state(self, state):
        self.rng.bit_generator.state = state["bit_generator"]
        self.failed = set(state.get("failed", ()))

    # ------------------------------------------------------------------------------- crops
    def _load(self, path):
        if self._cache is not None and path in self._cache:
            return self._cache[path]
        img = _image.load_image(path)
        if self._cache is not None:
            self._cache[path] = img
        return img

    def crop(self):
        """One random crop as a PIL image of size x size (and the draw: index, side, left, top, flip)."""
        while True:
            if len(self.failed) == len(self.photos):
                raise InputError(f"none of the photos under {self.folder!r} could be decoded")
            index = int(self.rng.integers(len(self.photos)))
            frac, fx, fy, flip = self.rng.random(4)
            path = self.photos[index]
            if path in self.failed:
                continue
            try:
                img = self._load(path)
            except InputError:
                self.failed.add(path)
                continue
            width, height = img.size
            lo, hi = self.scale
            side = max(1.0, (lo + (hi - lo) * frac) * min(width, height))
            left = fx * (width - side)
            top = fy * (height - side)
            picture = img.resize((self.size, self.size), Image.Resampling.BILINEAR,
                                 box=(left, top, left + side, top + side))
            if self.flip and flip < 0.5:
                picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return picture

    def batch(self, n):
        """n crops as one float32 array (n, 3, size, size) in the VGG input space."""
        return np.stack([_image.preprocess(self.crop(), None, self.convention) for _ in range(int(n))])
