"""Python's cyclic garbage collector, paused for a block of code.

Reference counting still frees every object when its last reference goes; only objects in
reference cycles wait until the block ends. Used where a collection would cost what is being
measured or made: inside a measured phase (a full collection walks every object of the
process and stalls every agent's stream at once) and while the aggregate step reads a chunk
of run records (the collector's passes over the chunk's many dicts cost ~15 % of the reading).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; the collector's state is restored after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
