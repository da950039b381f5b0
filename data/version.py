"""occo's version, the single source for the package metadata, stores and weights."""

OCCO_VERSION = "0.1.0"
