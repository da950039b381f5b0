"""Image pairing, reading/writing and colour conversion shared by every occo package."""

from occo.data.color import rgb_to_ycbcr, toolkit_gray, ycbcr_to_rgb
from occo.data.errors import OccoError
from occo.data.io import ImageReadError, read_image, write_image_atomic
from occo.data.pairing import IMAGE_EXTENSIONS, Pairing, list_images, pair_images
from occo.data.version import OCCO_VERSION

__all__ = [
    "IMAGE_EXTENSIONS",
    "OCCO_VERSION",
    "OccoError",
    "ImageReadError",
    "Pairing",
    "list_images",
    "pair_images",
    "read_image",
    "rgb_to_ycbcr",
    "toolkit_gray",
    "write_image_atomic",
    "ycbcr_to_rgb",
]
