"""The Keras datasets cache: where `keras.datasets.<name>.load_data()` keeps its files, finding them there (or in
an archive left there), and fetching them into the same place when missing."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from jobs.datasets.base import DataUnavailable, where
from jobs.datasets.download import download_allowed, download_with_retries
from jobs.errors import BadInputError
from jobs.spec import DataSpec

log = logging.getLogger(__name__)


def _writable(path: Path) -> bool:
    """True when `path` is, or could be created as, a writable folder."""
    for p in (path, *path.parents):
        if p.exists():
            return p.is_dir() and os.access(p, os.W_OK)
    return False


def keras_datasets_dirs(spec: DataSpec) -> list[Path]:
    """Where the Keras datasets are looked for, in order; downloads go to the first writable one.

    `data.path` wins (the datasets folder itself, or a Keras home holding `datasets/`); else what Keras uses:
    `$KERAS_HOME/datasets` or `~/.keras/datasets`, and `/tmp/.keras/datasets` when those are not writable.
    """
    if spec.path:
        base = Path(spec.path).expanduser()
        return [base, base / "datasets"]
    if os.environ.get("KERAS_HOME"):
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        user_home = Path(os.path.expanduser("~"))
        home = user_home / ".keras" if os.access(user_home, os.W_OK) else Path("/tmp/.keras")
    dirs = [home / "datasets"]
    if not _writable(home) and home != Path("/tmp/.keras"):
        dirs.append(Path("/tmp/.keras/datasets"))
    return dirs


@dataclass(frozen=True)
class KerasSource:
    """One Keras dataset as it lies in the cache, and where it comes from."""

    name: str
    files: tuple[str, ...]  # relative to the data folder
    # Data folders relative to a datasets dir, newest Keras layout first.
    layouts: tuple[str, ...]
    origin: str  # for a single-file dataset, the file's URL; for an archive dataset, the archive's
    sha256: Optional[str] = None
    archive_names: tuple[str, ...] = ()  # where a downloaded/copied archive may lie, relative to a datasets dir
    archive_prefix: str = ""  # the folder inside the archive that holds `files`
    per_file_origin: bool = False  # fashion_mnist: one URL per file, origin is the folder URL


_KERAS_BASE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

# Origins, hashes and cache paths as in keras 3.15 `keras/src/datasets/*.py` and `keras/src/utils/file_utils.py`
# (`get_file(fname=<dir>, extract=True)` downloads to `<dir>_archive` and extracts into `<dir>/`); the second layout
# is tf-keras / Keras 2 (`get_file(<dir>, untar=True)`: archive `<dir>.tar.gz`, extracted beside it).
KERAS_SOURCES: dict[str, KerasSource] = {
    "mnist": KerasSource(
        name="mnist",
        files=("mnist.npz",),
        layouts=("",),
        origin=_KERAS_BASE + "mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
    "fashion_mnist": KerasSource(
        name="fashion_mnist",
        files=(
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        ),
        layouts=("fashion-mnist",),
        origin=_KERAS_BASE,
        per_file_origin=True,
    ),
    "cifar10": KerasSource(
        name="cifar10",
        files=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
        layouts=("cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"),
        origin="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        archive_names=("cifar-10-batches-py-target_archive", "cifar-10-batches-py.tar.gz", "cifar-10-python.tar.gz"),
        archive_prefix="cifar-10-batches-py",
    ),
    "cifar100": KerasSource(
        name="cifar100",
        files=("train", "test"),
        layouts=("cifar-100-python-target/cifar-100-python", "cifar-100-python"),
        origin="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        archive_names=("cifar-100-python-target_archive", "cifar-100-python.tar.gz"),
        archive_prefix="cifar-100-python",
    ),
}


def _find_data_dir(source: KerasSource, dirs: list[Path]) -> Optional[Path]:
    for base in dirs:
        for layout in source.layouts:
            folder = base / layout if layout else base
            if all((folder / f).is_file() for f in source.files):
                return folder
        # data.path may point straight at the folder holding the files (e.g. an extracted cifar-10-batches-py/).
        if all((base / f).is_file() for f in source.files):
            return base
    return None


def _find_archive(source: KerasSource, dirs: list[Path]) -> Optional[Path]:
    for base in dirs:
        for name in source.archive_names:
            if (base / name).is_file():
                return base / name
    return None


def _missing_message(source: KerasSource, dirs: list[Path], reason: str) -> str:
    target = dirs[0]
    folder = target / source.layouts[0] if source.layouts[0] else target
    wanted = f"{', '.join(source.files)} in {where(folder)}/"
    where_from = (
        f"download {source.origin} and extract it into {where(target / source.layouts[0].split('/')[0])}/ "
        f"(or copy the archive to {where(target / source.archive_names[-1])})"
        if source.archive_names
        else "download "
        + ", ".join(source.origin + f if source.per_file_origin else source.origin for f in source.files)
        + f" into {where(folder)}/"
    )
    looked = ", ".join(where(d) for d in dirs)
    return (
        f"data.dataset: {source.name!r} files not found (looked in {looked}) and {reason}. "
        f"Wanted: {wanted}. To provide them: on a machine with internet, {where_from}; "
        f"or set data.path (or $KERAS_HOME) to a folder holding them."
    )


def _extract_tar(archive: Path, into: Path, source: KerasSource) -> None:
    """Extract like Keras' get_file(extract=True), but into a temp folder renamed into place (atomic)."""
    into.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{into.name}.", dir=into.parent))
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
        try:
            os.replace(tmp, into)
        except OSError:
            # `into` exists: a concurrent worker won the race (fine), or an earlier extraction stopped half-way
            # (Keras extracts in place): replace that one.
            done = into / source.archive_prefix
            if into.is_dir() and not all((done / f).is_file() for f in source.files):
                shutil.rmtree(into)
                os.replace(tmp, into)
            elif not into.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_from_archive(archive: Path, source: KerasSource) -> dict[str, bytes]:
    """Read the data files (and meta files) straight out of a CIFAR tar.gz without extracting it."""
    wanted = set(source.files) | {"batches.meta", "meta"}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted and member.name.startswith(source.archive_prefix + "/"):
                    found[name] = tf.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInputError(f"data.path: {str(archive)!r} is not a readable {source.name} archive: {exc}") from None
    missing = [f for f in source.files if f not in found]
    if missing:
        raise BadInputError(
            f"data.path: archive {str(archive)!r} lacks {missing} under {source.archive_prefix}/; "
            f"expected the archive from {source.origin}"
        )
    return found


def keras_files(source: KerasSource, spec: DataSpec) -> Callable[[str], bytes]:
    """A reader for the dataset's files, fetching them first when they are missing and a download is possible."""
    dirs = keras_datasets_dirs(spec)
    if spec.path and not Path(spec.path).expanduser().is_dir():
        raise DataUnavailable(
            f"data.path: {spec.path!r} is not a folder; expected the folder holding the {source.name} files "
            f"(a Keras datasets cache like ~/.keras/datasets): {', '.join(source.files)} in "
            f"{where(Path(spec.path) / source.layouts[0])}/ (create the folder to have them downloaded there)"
        )

    def from_folder(folder: Path) -> Callable[[str], bytes]:
        def read(name: str) -> bytes:
            return (folder / name).read_bytes()

        log.info("%s: reading %s", source.name, folder)
        return read

    folder = _find_data_dir(source, dirs)
    if folder is not None:
        return from_folder(folder)
    archive = _find_archive(source, dirs)
    if archive is not None:
        log.info("%s: reading %s (archive, not extracted)", source.name, archive)
        blobs = _read_from_archive(archive, source)
        return lambda name: blobs[name]

    allowed, why_not = download_allowed()
    if not allowed:
        raise DataUnavailable(_missing_message(source, dirs, why_not))
    target = next((d for d in dirs if _writable(d)), None)
    if target is None:
        raise DataUnavailable(_missing_message(source, dirs, "none of these folders is writable for a download"))
    try:
        if source.archive_names:
            archive = download_with_retries(source.origin, target / source.archive_names[0], source.sha256)
            _extract_tar(archive, target / source.layouts[0].split("/")[0], source)
        else:
            folder = target / source.layouts[0] if source.layouts[0] else target
            for f in source.files:
                if not (folder / f).is_file():
                    url = source.origin + f if source.per_file_origin else source.origin
                    download_with_retries(url, folder / f, source.sha256)
    except (OSError, ValueError, tarfile.TarError) as exc:  # TimeoutError and URLError are OSErrors
        raise DataUnavailable(_missing_message(source, dirs, f"the download failed ({exc})")) from None
    folder = _find_data_dir(source, dirs)
    if folder is None:  # the archive did not hold what Keras' loader expects
        raise DataUnavailable(_missing_message(source, dirs, "the downloaded archive did not contain them"))
    return from_folder(folder)


