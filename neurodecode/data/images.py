"""Image sets: stimulus images in one layout, from a folder or from arrays.

Models see images as float32 tensors ``(batch, 3, height, width)`` with values in [0, 1]
(:func:`as_batch`); stores and notebooks hold them as arrays ``(n, height, width, 3)``
(:func:`as_array`, the layout of :func:`neurodecode.store.write_stimuli`). Grayscale images
``(n, height, width)`` are accepted everywhere and repeated into three channels.

:func:`load_image_folder` reads a folder of image files (one sub-folder per class, as
``../shared/data/images/haxby_face_house``) into an :class:`ImageSet`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "as_array", "as_batch", "load_image_folder", "resize"]

#: File suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")


def as_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as a float32 tensor ``(n, 3, height, width)`` in [0, 1].

    Parameters
    ----------
    images : array or Tensor
        ``(n, height, width)`` (grayscale), ``(n, height, width, 3)`` (array layout) or
        ``(n, 3, height, width)`` (already a batch; returned as float32, gradients kept).

    Returns
    -------
    Tensor
    """
    if isinstance(images, torch.Tensor):
        x = images.float()
        if x.ndim == 4 and x.shape[1] == 3:
            return x
        if x.ndim == 4 and x.shape[-1] == 3:
            return x.permute(0, 3, 1, 2).contiguous()
        if x.ndim == 3:
            return x[:, None].expand(-1, 3, -1, -1).contiguous()
        raise ValueError(f"images must be (n, H, W), (n, H, W, 3) or (n, 3, H, W), got "
                         f"{tuple(x.shape)}")
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be (n, H, W) or (n, H, W, 3) arrays, got {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def as_array(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images as a float32 array ``(n, height, width, 3)`` in [0, 1] (clipped)."""
    x = as_batch(images).detach().cpu()
    return np.clip(x.permute(0, 2, 3, 1).numpy(), 0.0, 1.0).astype(np.float32)


def resize(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Images resized to ``size`` × ``size`` (area averaging down, bilinear up), as a batch."""
    x = as_batch(images)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if x.shape[-1] > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(x, size=(size, size), mode=mode, **kwargs)


@dataclass
class ImageSet:
    """Stimulus images with their class and, for simulations, their generative parameters.

    Attributes
    ----------
    images : ndarray
        float32 ``(n, height, width, 3)`` in [0, 1].
    classes : ndarray
        int64 ``(n,)``: index into :attr:`class_names`.
    class_names : list of str
    names : list of str
        One name per image (its file's path relative to the folder, for a folder).
    params : DataFrame, optional
        Ground-truth parameters, one row per image (procedural scenes).
    """

    images: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    names: list[str]
    params: pd.DataFrame | None = field(default=None)

    def __post_init__(self) -> None:
        self.images = as_array(self.images)
        self.classes = np.asarray(self.classes, dtype=np.int64)
        n = len(self.images)
        if len(self.classes) != n or len(self.names) != n:
            raise ValueError(f"{n} images, {len(self.classes)} classes and {len(self.names)} "
                             "names: they must match")
        if self.params is not None and len(self.params) != n:
            raise ValueError(f"{n} images but {len(self.params)} parameter rows")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[1])


def load_image_folder(path: str | os.PathLike, *, size: int = 32) -> ImageSet:
    """Read a folder of images, one sub-folder per class, resized to ``size`` × ``size``.

    Images directly in ``path`` (no sub-folder) form one class named after the folder. Files
    are read in sorted order; each is centre-cropped to a square, then resized (Pillow, Lanczos)
    and converted to RGB.

    Parameters
    ----------
    path : path-like
    size : int
        Side of the output images in pixels.

    Returns
    -------
    ImageSet

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder or holds no image file.
    ValueError
        If a file cannot be read as an image (the error names it).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no image file ({', '.join(IMAGE_SUFFIXES)})")
    groups = sorted({p.parent.relative_to(root).as_posix() for p in files})
    class_names = [root.name if g == "." else g for g in groups]
    images, classes = [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side))
                im = im.resize((size, size), Image.Resampling.LANCZOS)
                images.append(np.asarray(im, dtype=np.float32) / 255.0)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{p}: not a readable image ({err})") from err
        classes.append(groups.index(p.parent.relative_to(root).as_posix()))
    return ImageSet(np.stack(images), np.asarray(classes), class_names,
                    [p.relative_to(root).as_posix() for p in files])
