"""alignkit.environment: the versions recorded with a result follow alignkit's declared requirements."""
import re
from importlib import metadata

import torch

from alignkit.environment import environment, package_versions


def test_every_installed_requirement_is_recorded_with_its_version():
    versions = package_versions()
    assert versions["alignkit"] == metadata.version("alignkit")
    assert versions["torch"] == torch.__version__
    for req in metadata.requires("alignkit"):
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            assert name not in versions
            continue
        assert versions[name] == installed, name


def test_environment_names_python_and_platform():
    import platform

    env = environment()
    assert env["python"] == platform.python_version() and env["platform"] == platform.platform()
    assert env["packages"] == package_versions()
