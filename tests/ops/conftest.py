"""Fixtures for the kernel tests: the compiled ops (``alignkit.ops._kernels``) and the reference."""
import pytest

from alignkit.ops import reference as R

try:
    from alignkit.ops import _kernels as K
except ImportError as e:  # the extension must be built for these tests
    K, _why = None, str(e)


@pytest.fixture(scope="session")
def kernels():
    if K is None:
        pytest.fail(f"alignkit._C is not built ({_why}); run `pip install --no-build-isolation -e .`")
    return K


@pytest.fixture(scope="session")
def reference():
    return R
