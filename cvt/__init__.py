"""The Camera Visualization Tool application: command line, Qt viewer and server."""

from core import __version__

__all__ = ["__version__"]
