"""The package's version, for the layers below the package root (runs record it)."""

__version__ = "0.1.0"
