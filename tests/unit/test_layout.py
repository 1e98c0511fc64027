"""The sandbox is a package of its own: the driver imports it only for ``driver sandbox ...`` and its
wheel does not contain it."""

from __future__ import annotations

import subprocess
import sys

from driver import ROOT


def test_driver_does_not_import_the_sandbox():
    code = (
        "import sys, driver.cli, driver.lock; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sandbox'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_driver_wheel_leaves_the_sandbox_out():
    # The packages setuptools would put in the driver's wheel, by the same configuration.
    code = (
        "import setuptools, tomllib; "
        "c = tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages']['find']; "
        "print(' '.join(sorted(setuptools.find_packages(**c))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    packages = out.stdout.split()
    assert "driver" in packages
    assert not [p for p in packages if p.split(".")[0] == "sandbox"]
