"""Root pytest configuration, loaded before anything imports numba.

Numba's on-disk cache is keyed by each kernel's own source file, so a kernel that inlines
a function from another file keeps running the old version after that other file changes
(numba does not invalidate caches across files). Under CI (``CI`` set to true/1/yes) the
suite therefore compiles into a fresh, empty ``NUMBA_CACHE_DIR`` of its own, even if the
machine's environment points numba at a persistent cache; subprocesses started by tests
inherit it. Locally the normal cache is kept (delete ``__pycache__`` folders, or set
``NUMBA_CACHE_DIR`` yourself, after editing a kernel another kernel calls).
"""

import os
import sys
import tempfile

if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes") and "numba" not in sys.modules:
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="safemeta-numba-ci-")
