"""The Qt focal-plane viewer (``cvt view``).

Modules: ``tiles`` (geometry, tile keys, the cache: no Qt), ``loader`` (worker threads and the
tile loader), ``view`` (the scene and navigation), ``overlays``, ``panels``, ``health`` (the
adapter to ``core.health``), ``window`` (the controller), ``app`` (running it, offscreen or
not). Importing this package does not import Qt; its modules do.
"""
