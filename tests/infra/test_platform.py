"""infra/platform.sh: the distribution-specific part of `make up` (package names, where PostgreSQL,
Redis/Valkey, Chromium and Python 3.11 are). Each supported system's branch is fed that system's
/etc/os-release and a fake filesystem holding what its packages install; the last tests ask the
real machine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "infra" / "platform.sh"

OS_RELEASE = {
    "debian-12": """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
""",
    "debian-13": """PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
VERSION_CODENAME=trixie
DEBIAN_VERSION_FULL=13.1
ID=debian
""",
    "ubuntu-24.04": """PRETTY_NAME="Ubuntu 24.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.3 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
""",
}
UNSUPPORTED = {
    "ubuntu-22.04": 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n',
    "debian-11": 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nVERSION_ID="11"\nID=debian\n',
    "fedora-41": 'NAME="Fedora Linux"\nVERSION_ID=41\nID=fedora\nPRETTY_NAME="Fedora Linux 41 (Workstation Edition)"\n',
    "debian-sid": 'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nNAME="Debian GNU/Linux"\nID=debian\n',
}

# What each system's packages are called (apt) and what they put on disk.
EXPECTED_PACKAGES = {
    "debian-12": {
        "postgres": "postgresql-15",
        "redis": "redis-server",
        "java": "openjdk-17-jre-headless",
        "chromium": "chromium",
        "venv": "python3-venv",
    },
    "debian-13": {
        "postgres": "postgresql-17",
        "redis": "redis-server",
        "java": "openjdk-21-jre-headless",
        "chromium": "chromium",
        "venv": "python3-venv",
    },
    # Ubuntu's chromium / chromium-browser debs are stubs that install the snap: no package.
    "ubuntu-24.04": {
        "postgres": "postgresql-16",
        "redis": "redis-server",
        "java": "openjdk-17-jre-headless",
        "chromium": "",
        "venv": "python3-venv",
    },
}
# The start of /usr/bin/chromium-browser in Ubuntu 24.04's chromium-browser 2:1snap1-0ubuntu2 (the deb
# only hands over to the snap).
UBUNTU_CHROMIUM_STUB = """#!/bin/sh
if ! [ -x /snap/bin/chromium ]; then
    echo "" >&2
    echo "Command '$0' requires the chromium snap to be installed." >&2
    echo "Please install it with:" >&2
    echo "" >&2
    echo "snap install chromium" >&2
    echo "" >&2
    exit 1
fi
exec /snap/bin/chromium "$@"
"""
# What the packages put on disk (checked with dpkg -c on Debian 13's postgresql-17, redis-server and
# valkey-server, Ubuntu 24.04's postgresql-16 and redis-server): server binaries, the browser, Python.
INSTALLED_FILES = {
    "debian-12": [
        "usr/lib/postgresql/15/bin/postgres",
        "usr/bin/redis-server",
        "usr/bin/chromium",
        "usr/bin/python3.11",
    ],
    "debian-13": [
        "usr/lib/postgresql/17/bin/postgres",
        "usr/bin/valkey-server",
        "usr/bin/chromium",
        "usr/bin/python3.13",
    ],
    "ubuntu-24.04": [
        "usr/lib/postgresql/16/bin/postgres",
        "usr/bin/redis-server",
        "opt/google/chrome/google-chrome",
        "usr/bin/python3.12",
    ],
}
EXPECTED_DETECT = {
    "debian-12": {
        "PG_BIN": "/usr/lib/postgresql/15/bin",
        "REDIS_SERVER": "/usr/bin/redis-server",
        "CHROMIUM": "/usr/bin/chromium",
        "PYTHON": "/usr/bin/python3.11",
    },
    "debian-13": {
        "PG_BIN": "/usr/lib/postgresql/17/bin",
        "REDIS_SERVER": "/usr/bin/valkey-server",
        "CHROMIUM": "/usr/bin/chromium",
        "PYTHON": "",
    },
    "ubuntu-24.04": {
        "PG_BIN": "/usr/lib/postgresql/16/bin",
        "REDIS_SERVER": "/usr/bin/redis-server",
        "CHROMIUM": "/opt/google/chrome/google-chrome",
        "PYTHON": "",
    },
}


def platform(*args: str, root: Path | None = None, os_release: str | None = None, path: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATFORM_")}
    if root is not None:
        env["PLATFORM_ROOT"] = str(root)
    if os_release is not None:
        assert root is not None
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "os-release").write_text(os_release)
    if path is not None:
        env["PLATFORM_PATH"] = path
    done = subprocess.run(["bash", str(PLATFORM), *args], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def as_dict(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def install(root: Path, files: list[str], script: str = "#!/bin/sh\nexit 0\n") -> None:
    for rel in files:
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(script)
        f.chmod(0o755)


@pytest.mark.parametrize("system", sorted(OS_RELEASE))
def test_supported_system_package_names(tmp_path, system):
    assert platform("os", root=tmp_path, os_release=OS_RELEASE[system]).strip() == system
    assert as_dict(platform("packages", root=tmp_path)) == EXPECTED_PACKAGES[system]


@pytest.mark.parametrize("system", sorted(OS_RELEASE))
def test_supported_system_binaries_after_install(tmp_path, system):
    install(tmp_path, INSTALLED_FILES[system])
    if system == "ubuntu-24.04":  # the snap hand-over stubs come first on PATH and must be passed over
        install(tmp_path, ["usr/bin/chromium-browser", "usr/bin/chromium"], UBUNTU_CHROMIUM_STUB)
        (tmp_path / "usr/bin/google-chrome").symlink_to(tmp_path / "opt/google/chrome/google-chrome")
        search = "/usr/local/bin:/usr/bin:/snap/bin:/opt/google/chrome"
    else:
        search = "/usr/local/bin:/usr/bin:/bin"
    found = as_dict(platform("detect", root=tmp_path, os_release=OS_RELEASE[system], path=search))
    expected = dict(EXPECTED_DETECT[system], OS=system)
    if system == "ubuntu-24.04":
        expected["CHROMIUM"] = "/usr/bin/google-chrome"  # a real Chrome on PATH, not the stub before it
    assert found == expected


@pytest.mark.parametrize("system", sorted(UNSUPPORTED))
def test_unsupported_system_is_one_sentence(tmp_path, system):
    assert platform("os", root=tmp_path, os_release=UNSUPPORTED[system]).strip() == "unsupported"
    assert set(as_dict(platform("packages", root=tmp_path)).values()) == {""}
    message = platform("unsupported", root=tmp_path).strip()
    assert "\n" not in message and message.count(". ") == 0
    assert "Debian 12, Debian 13 and Ubuntu 24.04" in message
    pretty = re.search(r'PRETTY_NAME="([^"]+)"', UNSUPPORTED[system])
    assert pretty and pretty.group(1) in message


def test_postgres_highest_version_at_least_15_unless_the_data_directory_needs_another(tmp_path):
    install(tmp_path, [f"usr/lib/postgresql/{v}/bin/postgres" for v in (13, 15, 17)])
    (tmp_path / "usr/lib/postgresql/18/bin").mkdir(parents=True)  # client only (no server binary)
    assert as_dict(platform("detect", root=tmp_path, path=""))["PG_BIN"] == "/usr/lib/postgresql/17/bin"
    assert as_dict(platform("detect", "15", root=tmp_path, path=""))["PG_BIN"] == "/usr/lib/postgresql/15/bin"
    assert as_dict(platform("detect", "16", root=tmp_path, path=""))["PG_BIN"] == "/usr/lib/postgresql/17/bin"
    only_old = tmp_path / "old"
    install(only_old, ["usr/lib/postgresql/14/bin/postgres"])
    assert as_dict(platform("detect", root=only_old, path=""))["PG_BIN"] == ""


def test_redis_preferred_over_valkey_and_snap_only_chromium_is_none(tmp_path):
    install(tmp_path, ["usr/bin/valkey-server", "usr/bin/redis-server"])
    install(tmp_path, ["usr/bin/chromium-browser"], '#!/bin/sh\nexec /snap/bin/chromium-browser "$@"\n')
    (tmp_path / "snap/bin").mkdir(parents=True)
    install(tmp_path, ["snap/chromium/current/usr/lib/chromium-browser/chrome"])
    (tmp_path / "snap/bin/chromium").symlink_to(tmp_path / "snap/chromium/current/usr/lib/chromium-browser/chrome")
    found = as_dict(platform("detect", root=tmp_path, path="/usr/bin:/snap/bin"))
    assert found["REDIS_SERVER"] == "/usr/bin/redis-server"
    assert found["CHROMIUM"] == ""


# --- the real machine ------------------------------------------------------------------------------


def os_release_fields() -> dict[str, str]:
    fields = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key] = value.strip().strip('"').strip("'")
    return fields


def test_this_machine_is_detected():
    fields = os_release_fields()
    system = f"{fields.get('ID')}-{fields.get('VERSION_ID')}"
    found = as_dict(platform("detect"))
    assert found["OS"] == (system if system in OS_RELEASE else "unsupported")
    if found["OS"] == "unsupported":
        pytest.skip(f"{fields.get('PRETTY_NAME')} is not a supported system: {platform('unsupported').strip()}")
    assert as_dict(platform("packages")) == EXPECTED_PACKAGES[system]


def test_this_machine_binaries_work():
    """What stack.sh will run: `make test` installed them, so each one must answer for its version."""
    found = as_dict(platform("detect"))
    postgres = subprocess.run([f"{found['PG_BIN']}/postgres", "--version"], capture_output=True, text=True)
    major = int(re.search(r"\) (\d+)", postgres.stdout).group(1))
    assert major >= 15, postgres.stdout
    redis = subprocess.run([found["REDIS_SERVER"], "--version"], capture_output=True, text=True)
    assert re.search(r"(Redis|Valkey) server v=\d", redis.stdout, re.I), redis.stdout
    if found["PYTHON"]:
        version = subprocess.run(
            [found["PYTHON"], "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        assert version.stdout.strip() == "(3, 11)"
    chromium = os.environ.get("STOCKPIPE_CHROMIUM") or found["CHROMIUM"]
    if not chromium:
        pytest.skip("no Chromium on this machine yet (`make test` finds or installs one before pytest)")
    assert "snap" not in os.path.realpath(chromium)
