"""The one jit policy of the project (as datashader's ``ngjit``).

``nogil`` so kernels run in worker threads while the GUI keeps going; ``cache`` so a second
process does not compile again. Kernels take arrays and scalars only: no I/O, logging or config.
"""

from __future__ import annotations

import numba

ngjit = numba.njit(nogil=True, cache=True)
ngjit_parallel = numba.njit(nogil=True, cache=True, parallel=True)
