"""Compute library of the Camera Visualization Tool: geometry, raw reading, ISR, pyramids, metrics.

Never imports Qt, pyqtgraph or the application package ``cvt``.
"""

__version__ = "0.1.0"
