"""Image pairing, reading/writing and colour conversion shared by every occo package."""

from occo.data.lazy import lazy_exports, refuse_bare_import

refuse_bare_import(__name__)  # the repository root is the package `occo` itself


# Names resolve on first use (PEP 562): `import occo.data.version` must not import torch,
# so that `occo --help` starts fast.
__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "occo.data.color": ("rgb_to_ycbcr", "toolkit_gray", "ycbcr_to_rgb"),
        "occo.data.errors": ("OccoError",),
        "occo.data.io": ("ImageReadError", "read_image", "write_image_atomic"),
        "occo.data.pairing": ("IMAGE_EXTENSIONS", "Pairing", "list_images", "pair_images"),
        "occo.data.version": ("OCCO_VERSION",),
    },
)
