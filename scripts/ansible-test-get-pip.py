"""Stands in for the get-pip.py that ansible-test downloads from ci-files.testing.ansible.com to put pip
into the virtual environments of its sanity tests (scripts/sanity.sh copies it into ansible-test's
cache). That host may be unreachable where only the package registries are; this bootstraps pip
from Python's own ensurepip, then installs what ansible-test asked for (its pinned pip) from the
package index with the machine's pip configuration.

    python get_pip_<version>.py [pip install options] PACKAGES [--no-setuptools] [--no-wheel]
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap()
# ensurepip isolates itself with PIP_CONFIG_FILE=/dev/null; the real install must see the machine's
# pip configuration (index, certificates), as get-pip.py's own install does.
os.environ.pop("PIP_CONFIG_FILE", None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
