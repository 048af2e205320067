"""Benign look-alikes that must stay clean: the everyday code of real packages that shares
tokens with malware (build steps with subprocess, base64 in tests, vendored minified code…)."""

from __future__ import annotations

import base64

import pytest

from stockade.core.threats import scan_bytes
from tests.unit.threats.builders import sdist, wheel

BENIGN: list[tuple[str, dict[str, str]]] = [
    (
        "setup.py with build commands, git and cmake",
        {
            "setup.py": (
                "import os, subprocess, sys\n"
                "from setuptools import setup, Extension\n"
                "from setuptools.command.build_ext import build_ext\n\n"
                "def version():\n"
                "    try:\n"
                "        return subprocess.check_output(['git', 'describe', '--tags']).decode()\n"
                "    except Exception:\n"
                "        return '0.0'\n\n"
                "class CMakeBuild(build_ext):\n"
                "    def run(self):\n"
                "        subprocess.check_call(['cmake', '-S', '.', '-B', 'build'])\n"
                "        subprocess.check_call(['cmake', '--build', 'build', '-j', "
                "str(os.cpu_count())], env=os.environ.copy())\n"
                "        build_ext.run(self)\n\n"
                "setup(name='demo', version=version(), cmdclass={'build_ext': CMakeBuild},\n"
                "      ext_modules=[Extension('demo._c', ['demo/_c.c'])])\n"
            )
        },
    ),
    (
        "setup.py reading its version with exec(open(...))",
        {
            "setup.py": (
                "from setuptools import setup\n"
                "about = {}\n"
                "exec(open('demo/__about__.py').read(), about)\n"
                "setup(name='demo', version=about['__version__'])\n"
            ),
            "demo/__about__.py": "__version__ = '1.0'\n",
        },
    ),
    (
        "setup.py downloading a library it builds (fetched, not executed)",
        {
            "setup.py": (
                "import os, tarfile, urllib.request\n"
                "from setuptools import setup\n"
                "URL = 'https://github.com/example/libfoo/archive/v1.2.tar.gz'\n"
                "if not os.path.exists('libfoo.tar.gz'):\n"
                "    urllib.request.urlretrieve(URL, 'libfoo.tar.gz')\n"
                "    tarfile.open('libfoo.tar.gz').extractall('build')\n"
                "setup(name='demo', version='1.0')\n"
            )
        },
    ),
    (
        "tests decoding base64 fixtures and pickling round trips",
        {
            "tests/test_codec.py": (
                "import base64, pickle, zlib\n"
                "DATA = '" + base64.b64encode(bytes(range(256)) * 8).decode() + "'\n"
                "def test_roundtrip():\n"
                "    raw = zlib.decompress(zlib.compress(base64.b64decode(DATA)))\n"
                "    assert pickle.loads(pickle.dumps(raw)) == raw\n"
            )
        },
    ),
    (
        "a client sending an API token from the environment",
        {
            "demo/client.py": (
                "import os, requests\n"
                "API = 'https://api.example.com/v1'\n"
                "def me():\n"
                "    token = os.environ['DEMO_TOKEN']\n"
                "    auth = {'Authorization': 'Bearer ' + token}\n"
                "    return requests.get(API + '/me', headers=auth)\n"
            )
        },
    ),
    (
        "finding the local address the usual ways",
        {
            "demo/net.py": (
                "import socket\n"
                "def local_ip():\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "    s.connect(('8.8.8.8', 80))\n"
                "    return s.getsockname()[0]\n"
                "HOST_IP = socket.gethostbyname(socket.gethostname())\n"
            )
        },
    ),
    (
        "a tool that downloads a release binary when asked, and runs it",
        {
            "demo/driver.py": (
                "import os, stat, subprocess, urllib.request\n"
                "RELEASE = 'https://github.com/example/driver/releases/download/v2/driver'\n"
                "def install(dest):\n"
                "    urllib.request.urlretrieve(RELEASE, dest)\n"
                "    os.chmod(dest, os.stat(dest).st_mode | stat.S_IEXEC)\n"
                "    return subprocess.check_output([dest, '--version'])\n"
            )
        },
    ),
    (
        "vendored minified JavaScript with eval and long lines",
        {
            "demo/static/vendor.min.js": "!function(e){" + "var a=1;" * 5000 + "eval(e)}();\n",
            "demo/__init__.py": "",
        },
    ),
    (
        "an icon embedded as base64 in a module",
        {"demo/icons.py": "ICON = '" + base64.b64encode(bytes(range(256)) * 20).decode() + "'\n"},
    ),
    (
        "setuptools-style .pth hook",
        {
            "distutils-precedence.pth": (
                "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; "
                "enabled = os.environ.get(var, 'local') == 'local'; "
                "enabled and __import__('_distutils_hack').add_shim(); \n"
            )
        },
    ),
    (
        "a CLI running git and pip on the user's behalf",
        {
            "demo/cli.py": (
                "import subprocess, sys\n"
                "def upgrade(pkg):\n"
                "    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-U', pkg])\n"
                "def clone(url):\n"
                "    subprocess.run(['git', 'clone', url], check=True)\n"
            )
        },
    ),
    (
        "telemetry opt-in with platform facts, sent when called",
        {
            "demo/telemetry.py": (
                "import platform, requests\n"
                "def report(enabled):\n"
                "    if enabled:\n"
                "        requests.post('https://telemetry.example.com/v1', json={'os': "
                "platform.system(), 'py': platform.python_version()})\n"
            )
        },
    ),
    (
        "ordinary words that are also shell commands",
        {
            "demo/config.py": (
                "import os, requests\n"
                "ENV = os.getenv('env', 'test')\n"
                "def save(mode='set', user_id='id'):\n"
                "    requests.post('https://api.example.com/v1/settings', "
                "json={'env': ENV, 'mode': mode, 'key': user_id})\n"
            )
        },
    ),
    (
        "SSH helper reading the user's key for a connection",
        {
            "demo/ssh.py": (
                "import os, paramiko\n"
                "def connect(host):\n"
                "    c = paramiko.SSHClient()\n"
                "    c.connect(host, key_filename=os.path.expanduser('~/.ssh/id_rsa'))\n"
                "    return c\n"
            )
        },
    ),
]


@pytest.mark.parametrize(("title", "files"), BENIGN, ids=[b[0] for b in BENIGN])
def test_benign_sdist_is_clean(title: str, files: dict[str, str]) -> None:
    rep = scan_bytes(sdist(files), "demo-1.0.tar.gz")
    assert rep.verdict == "clean", (title, [(f.rule, f.severity, f.snippet) for f in rep.findings])


def test_benign_wheel_is_clean() -> None:
    files = {name: body for _, fs in BENIGN for name, body in fs.items() if name != "setup.py"}
    rep = scan_bytes(wheel(files), "demo-1.0-py3-none-any.whl")
    assert rep.verdict == "clean", [(f.rule, f.severity, f.path) for f in rep.findings]
