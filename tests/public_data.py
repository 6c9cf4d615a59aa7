"""Real, public DICOM-RT test data that ships inside two PyPI packages, fetched at test time and cached.

Nothing here is committed to the repository: the tests download the two package files with pip (from the
machine's configured package index), check their SHA-256, and unpack only the members they need into a cache
folder that outlives the test session (``$RADIOGENOMICS_TEST_DATA_DIR``, default
``~/.cache/radiogenomics-test-data``). A fresh machine (CI) downloads them on its first run: 25.9 MB + 2.7 MB,
measured 0.9 s + 1.6 s here without pip's cache (pip prepares the sdist's metadata); the cache then holds 53 MB
(the two files and 25 MB unpacked). Without access to the package index the tests that need them **fail** with
a message naming the command and the file to put into the cache folder; they never skip.

* **pycerr 2.5.1** (wheel, ``cerr/datasets/radiomics_phantom_dicom/pat_1`` .. ``pat_4``): CT series of the
  Radiomics Digital Phantom with a CERR-written RTSTRUCT holding one ROI, ``GTV-1`` (blank
  RTROIInterpretedType). Licence: CC BY-NC 3.0 (CancerData, Lambin P., DOI 10.17195/candat.2016.08.1; see
  ``README_LICENSE.txt`` in the unpacked folder). Used here for testing only, never redistributed.
* **dicompyler-core 0.5.6** (sdist, ``tests/testdata/example_data``): one CT slice (``ct.0.dcm``) of a
  98-slice breast series, the RTSTRUCT of that series (BODY, Heart, Lt Lung, Tumor Bed (CTV), ...), the RTDOSE
  (98 frames, 2.5 x 2.5 x 3 mm) and the RTPLAN of a 14 Gy / 7 fraction breast boost. BSD licence. The sdist's
  ``tests/test_dvhcalc.py`` publishes dicompyler-core's expected DVH values for this data (unpacked too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE_ENV = "RADIOGENOMICS_TEST_DATA_DIR"


@dataclass(frozen=True)
class Package:
    """One package file on the index and the members of it the tests use."""

    requirement: str
    filename: str
    folder: str  # the cache sub-folder of its unpacked members
    sha256: str
    pip_options: tuple[str, ...]
    members: Callable[[str], bool]  # archive member name -> needed?
    strip: str  # prefix removed from member names when unpacking


PYCERR = Package(
    requirement="pycerr==2.5.1",
    filename="pycerr-2.5.1-py3-none-any.whl",
    folder="pycerr-2.5.1",
    sha256="5c3e82cc387538c5c38143827314fc2aa743ef886e8518f7f52beff6805c635d",
    pip_options=("--only-binary", ":all:"),
    members=lambda n: n.startswith("cerr/datasets/radiomics_phantom_dicom/") and not n.endswith("/"),
    strip="cerr/datasets/",
)

DICOMPYLER = Package(
    requirement="dicompyler-core==0.5.6",
    filename="dicompyler-core-0.5.6.tar.gz",
    folder="dicompyler-core-0.5.6",
    sha256="0e3c05920a8fa3f1c0ff05a5c21dab3ff3f735e00012b69b38926b219d07faee",
    # the sdist (the wheel has no tests/ folder); --no-build-isolation: pip prepares the sdist's metadata with
    # the venv's setuptools instead of downloading a build environment
    pip_options=("--no-binary", ":all:", "--no-build-isolation"),
    members=lambda n: (n.startswith("dicompyler-core-0.5.6/tests/testdata/example_data/")
                       or n in ("dicompyler-core-0.5.6/tests/test_dvhcalc.py", "dicompyler-core-0.5.6/LICENSE")),
    strip="dicompyler-core-0.5.6/",
)


def cache_dir() -> Path:
    """The folder that keeps the downloads and their unpacked members between sessions."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "radiogenomics-test-data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(package: Package, downloads: Path) -> Path:
    """The package file in ``downloads`` (pip download on first use); fails the test when it cannot be had."""
    target = downloads / package.filename
    if target.is_file() and _sha256(target) == package.sha256:
        return target
    scratch = downloads / f".pip-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", package.requirement, "--no-deps", *package.pip_options,
               "--disable-pip-version-check", "--timeout", "60", "-d", str(scratch)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        proc = None
    seconds = time.perf_counter() - start
    got = scratch / package.filename
    if proc is None or proc.returncode != 0 or not got.is_file():
        said = "timed out after 600 s" if proc is None else (proc.stdout + proc.stderr).strip()[-1500:]
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.fail(
            f"cannot download the public test data {package.filename} ({package.requirement}) from the package "
            f"index; this test needs it and does not skip. Command: {' '.join(command)}\npip said: {said}\n"
            f"Fix: give the machine access to the package index, or put {package.filename} (sha256 "
            f"{package.sha256}) into {downloads} (set ${CACHE_ENV} to use another cache folder).", pytrace=False)
    digest = _sha256(got)
    if digest != package.sha256:
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.fail(f"{package.filename} from the package index has sha256 {digest}, expected {package.sha256}: "
                    "the test data changed upstream; do not trust it.", pytrace=False)
    os.replace(got, target)
    shutil.rmtree(scratch, ignore_errors=True)
    (downloads / f"{package.filename}.download.txt").write_text(
        f"{package.requirement}: {target.stat().st_size} bytes in {seconds:.1f} s\n")
    return target


def _unpack(package: Package, archive: Path, into: Path) -> None:
    """Unpack the needed members (names without ``package.strip``) into ``into`` (must not exist yet)."""
    into.mkdir(parents=True)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if package.members(info.filename):
                    dest = into / info.filename[len(package.strip):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(info))
    else:
        with tarfile.open(archive, "r:gz") as tf:
            for member in tf.getmembers():
                if member.isfile() and package.members(member.name):
                    dest = into / member.name[len(package.strip):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    source = tf.extractfile(member)
                    assert source is not None
                    dest.write_bytes(source.read())


def fetch(package: Package) -> Path:
    """The unpacked members of ``package`` (downloaded and unpacked once; later calls reuse the cache)."""
    root = cache_dir()
    folder = root / package.folder
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text().strip() == package.sha256:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / ".lock", "w") as lock:  # one pytest process downloads, the others wait and reuse it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == package.sha256:
            return folder
        archive = _download(package, root / "downloads")
        staging = root / f".{package.folder}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        _unpack(package, archive, staging)
        (staging / ".complete").write_text(package.sha256)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    return folder


def radiomics_phantom() -> Path:
    """pycerr's ``radiomics_phantom_dicom`` folder: ``pat_1`` .. ``pat_4`` (CT series + ``DCM_RS_*.dcm``)."""
    folder = fetch(PYCERR) / "radiomics_phantom_dicom"
    missing = [f"pat_{i}" for i in range(1, 5) if not (folder / f"pat_{i}").is_dir()]
    if missing:
        pytest.fail(f"{PYCERR.filename} lacks {missing} under cerr/datasets/radiomics_phantom_dicom", pytrace=False)
    return folder


def dicompyler_example() -> Path:
    """dicompyler-core's ``example_data`` folder: ``ct.0.dcm``, ``rtss.dcm``, ``rtdose.dcm``, ``rtplan.dcm``."""
    folder = fetch(DICOMPYLER) / "tests" / "testdata" / "example_data"
    missing = [n for n in ("ct.0.dcm", "rtss.dcm", "rtdose.dcm", "rtplan.dcm") if not (folder / n).is_file()]
    if missing:
        pytest.fail(f"{DICOMPYLER.filename} lacks {missing} under tests/testdata/example_data", pytrace=False)
    return folder


def dicompyler_dvh_test_file() -> Path:
    """dicompyler-core's own ``tests/test_dvhcalc.py`` (the published expected DVH values)."""
    return fetch(DICOMPYLER) / "tests" / "test_dvhcalc.py"
