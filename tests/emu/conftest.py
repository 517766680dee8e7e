"""One emulation build of all the test kernels (tests/emu/emu_test_kernels.cuh) for every test here.

The g++ build with torch headers costs about a minute on 2 cores; ninja caches it in
``.torch_extensions/emu`` so later runs only relink what changed.
"""

import pytest
from fiber_kernels.testing import emu


@pytest.fixture(scope="session")
def emu_test() -> emu.EmuModule:
    """The emulation binding of the test kernels (tests/emu/emu_test_emu.cpp)."""
    return emu.build("emu_test", ["tests/emu/emu_test_emu.cpp"])
