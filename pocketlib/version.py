"""The release of this package (one place, so modules need not import the package itself)."""

__version__ = "0.1.0"
