"""Image preprocessing of each model family, through the libraries' own transforms where they have one.

- CLIP (open_clip / DFN, and the OpenAI evaluator): resize the short side to the input size (bicubic), centre
  crop, normalise with OpenAI's mean/std. open_clip's eval transform reproduces OpenAI's reference output exactly
  (tested against reference outputs in the test assets).
- OWLv2: the HF Owlv2ImageProcessor (pad to square with grey, resize to 960, normalise) from the checkpoint.
- Stable Diffusion: resize the short side, centre crop to the model's size, scale to [-1, 1] for the VAE.
"""

from __future__ import annotations

import torch
from PIL import Image

# OpenAI CLIP's image normalisation (open_clip's OPENAI_DATASET_MEAN/STD), used by all CLIP-family preprocessors.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_transform(image_size: int):
    """OpenAI/open_clip eval transform at `image_size` (a torchvision Compose: PIL -> [3, s, s] float)."""
    from open_clip.transform import image_transform

    return image_transform(image_size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)


def sd_transform(image_size: int):
    """PIL -> [3, s, s] in [-1, 1], as the VAE expects."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ])


def owl_pixels(processor, images: list[Image.Image]) -> torch.Tensor:
    """OWL-ViT/OWLv2 pixel values through the checkpoint's own image processor: [B, 3, S, S]."""
    return processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


def load_rgb(path) -> Image.Image:
    """Open an image file as RGB; a clear error naming the file when it is unreadable or truncated."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later inside a batch
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable or truncated image ({e})") from None
