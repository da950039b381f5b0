"""Image pairing, reading/writing and colour conversion shared by every occo package."""

# Names resolve on first use (PEP 562): `import occo.data.version` must not import torch,
# so that `occo --help` starts fast.
_EXPORTS = {
    "rgb_to_ycbcr": "occo.data.color",
    "toolkit_gray": "occo.data.color",
    "ycbcr_to_rgb": "occo.data.color",
    "OccoError": "occo.data.errors",
    "ImageReadError": "occo.data.io",
    "read_image": "occo.data.io",
    "write_image_atomic": "occo.data.io",
    "IMAGE_EXTENSIONS": "occo.data.pairing",
    "Pairing": "occo.data.pairing",
    "list_images": "occo.data.pairing",
    "pair_images": "occo.data.pairing",
    "OCCO_VERSION": "occo.data.version",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
