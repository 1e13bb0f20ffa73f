"""Dataset loaders: every dataset the spec names, read into uint8 image arrays with integer labels.

Resizing and colour conversion happen here (images of an image folder differ in size, so a fixed size must be
chosen before batching); rescaling and standardization happen inside the model graph, so the exported model
takes raw pixels.

The Keras datasets (mnist, fashion_mnist, cifar10, cifar100) are read with numpy from the very files
`keras.datasets.<name>.load_data()` caches, so a cache filled by Keras (3.x or tf-keras 2.x) is used as is and no
TensorFlow import is needed. A missing file is downloaded from the same origin Keras uses, with a bounded timeout,
into the same place; when that is impossible `DataUnavailable` names every file wanted and where to put it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from jobs.spec import DataSpec

log = logging.getLogger(__name__)

# image_folder needs one size for every image; this one is used (and logged) when data.resize is not set.
DEFAULT_IMAGE_FOLDER_SIZE = (64, 64)

# Set JOBCTL_OFFLINE=1 to never attempt a download (air-gapped clusters, CI).
OFFLINE_ENV = "JOBCTL_OFFLINE"
# Seconds allowed for name resolution, the connection and each read; a stalled download fails after this.
DOWNLOAD_TIMEOUT_ENV = "JOBCTL_DOWNLOAD_TIMEOUT"
DEFAULT_DOWNLOAD_TIMEOUT = 30.0
# Upper bound for a whole file, so a trickling connection cannot hold a job forever.
DOWNLOAD_DEADLINE_ENV = "JOBCTL_DOWNLOAD_DEADLINE"
DEFAULT_DOWNLOAD_DEADLINE = 1800.0
# Attempts per file for transient failures (timeouts, resets, HTTP 5xx). DataUnavailable is never retried at the
# pod level (exit code 3), so a network glitch is retried here, a few seconds apart.
DOWNLOAD_ATTEMPTS_ENV = "JOBCTL_DOWNLOAD_ATTEMPTS"
DEFAULT_DOWNLOAD_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 2.0


class DataUnavailable(Exception):
    """A dataset file is missing and cannot be downloaded; the message names the file and where to put it."""


@dataclass
class LoadedData:
    x_train: np.ndarray  # uint8 [N, H, W, C]
    y_train: np.ndarray  # int64 [N]
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    pixel_max: float  # the largest value a pixel can take in this dataset (255, or 16 for digits)
    notes: list[str] = field(default_factory=list)  # e.g. "skipped 3 corrupt files"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class _Raw:
    """What a loader returns: train and test splits before colour conversion, resizing and validation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    pixel_max: float = 255.0
    notes: list[str] = field(default_factory=list)
    # True when class_names come from the data itself (folder names) and data.class_names was already applied.
    names_resolved: bool = False


# ------------------------------------------------------------------------------------------------ helpers
def _as_nhwc_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x


def _split_off(x, y, fraction: float, seed: int, shuffle: bool):
    """Keras `validation_split` semantics: the last `fraction` of the (optionally shuffled) data."""
    n = len(x)
    cut = n - int(round(n * fraction))
    if not shuffle:  # views, not copies: CIFAR-sized arrays need not be duplicated
        return x[:cut], y[:cut], x[cut:], y[cut:]
    idx = np.random.default_rng(seed).permutation(n)
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) holding out `fraction` of every class; a class with 2+ examples keeps 1+ on each side.

    Both index arrays are sorted, so the relative order of the source is kept (callers shuffle when they want to).
    """
    test_parts = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(members) * fraction))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        else:
            k = 0
        test_parts.append(members[:k])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.array([], dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def _where(path: Path) -> str:
    return str(path.expanduser())


def _open_npz(source, what: str, expected: str) -> np.lib.npyio.NpzFile:
    """np.load(source) as an .npz archive, or a ValueError saying `what` is not one (pickle is never allowed)."""
    try:
        npz = np.load(source, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        # A file that is neither a zip nor a .npy is tried as a pickle, and numpy's refusal suggests loading it
        # unsafely: never pass that on. Zip and I/O errors say what is wrong, so they are quoted.
        why = "" if isinstance(exc, (ValueError, EOFError)) else f" ({exc})"
        raise ValueError(f"{what} is not a NumPy .npz archive{why}; {expected}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{what} holds a single array, not an .npz archive; {expected}")
    return npz


# ------------------------------------------------------------------------------------------------- digits
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: the CSV `load_digits()` reads, read without importing scikit-learn (~2 s)."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    csv = Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz" if found and found.origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        if table.ndim == 2 and table.shape[1] == 65:
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    from sklearn.datasets import load_digits  # a layout we do not know: let scikit-learn read it

    bunch = load_digits()
    return bunch.images, bunch.target


def _load_digits(spec: DataSpec, seed: int) -> _Raw:
    images, target = _digits_arrays()
    x = images.astype(np.uint8)  # values 0..16
    y = target.astype(np.int64)
    # Digits has no test split: hold one out, stratification-free but shuffled with the seed so classes mix.
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    x_train, y_train, x_test, y_test = _split_off(x, y, spec.test_fraction, seed, shuffle=False)
    return _Raw(x_train, y_train, x_test, y_test, [str(i) for i in range(10)], 16.0)


# ----------------------------------------------------------------------------------- the Keras file cache
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
class _KerasSource:
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
KERAS_SOURCES: dict[str, _KerasSource] = {
    "mnist": _KerasSource(
        name="mnist",
        files=("mnist.npz",),
        layouts=("",),
        origin=_KERAS_BASE + "mnist.npz",
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
    "fashion_mnist": _KerasSource(
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
    "cifar10": _KerasSource(
        name="cifar10",
        files=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
        layouts=("cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"),
        origin="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        archive_names=("cifar-10-batches-py-target_archive", "cifar-10-batches-py.tar.gz", "cifar-10-python.tar.gz"),
        archive_prefix="cifar-10-batches-py",
    ),
    "cifar100": _KerasSource(
        name="cifar100",
        files=("train", "test"),
        layouts=("cifar-100-python-target/cifar-100-python", "cifar-100-python"),
        origin="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        archive_names=("cifar-100-python-target_archive", "cifar-100-python.tar.gz"),
        archive_prefix="cifar-100-python",
    ),
}


def _find_data_dir(source: _KerasSource, dirs: list[Path]) -> Optional[Path]:
    for base in dirs:
        for layout in source.layouts:
            folder = base / layout if layout else base
            if all((folder / f).is_file() for f in source.files):
                return folder
        # data.path may point straight at the folder holding the files (e.g. an extracted cifar-10-batches-py/).
        if all((base / f).is_file() for f in source.files):
            return base
    return None


def _find_archive(source: _KerasSource, dirs: list[Path]) -> Optional[Path]:
    for base in dirs:
        for name in source.archive_names:
            if (base / name).is_file():
                return base / name
    return None


def _missing_message(source: _KerasSource, dirs: list[Path], reason: str) -> str:
    target = dirs[0]
    folder = target / source.layouts[0] if source.layouts[0] else target
    wanted = f"{', '.join(source.files)} in {_where(folder)}/"
    where_from = (
        f"download {source.origin} and extract it into {_where(target / source.layouts[0].split('/')[0])}/ "
        f"(or copy the archive to {_where(target / source.archive_names[-1])})"
        if source.archive_names
        else "download "
        + ", ".join(source.origin + f if source.per_file_origin else source.origin for f in source.files)
        + f" into {_where(folder)}/"
    )
    looked = ", ".join(_where(d) for d in dirs)
    return (
        f"data.dataset: {source.name!r} files not found (looked in {looked}) and {reason}. "
        f"Wanted: {wanted}. To provide them: on a machine with internet, {where_from}; "
        f"or set data.path (or $KERAS_HOME) to a folder holding them."
    )


def _download_allowed() -> tuple[bool, str]:
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False, f"downloads are disabled (${OFFLINE_ENV} is set)"
    return True, ""


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name}: expected a number of seconds, received {raw!r}") from None
    if value <= 0:
        raise ValueError(f"${name}: expected a positive number of seconds, received {raw!r}")
    return value


def _resolve_bounded(host: str, port: int, timeout: float) -> None:
    """getaddrinfo has no timeout of its own: run it in a daemon thread and stop waiting after `timeout`."""
    outcome: dict = {}

    def work():
        try:
            outcome["ok"] = socket.getaddrinfo(host, port)
        except OSError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=work, daemon=True, name=f"resolve-{host}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"resolving {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]


def download_file(url: str, dest: Path, sha256: Optional[str] = None, timeout: Optional[float] = None,
                  deadline: Optional[float] = None) -> Path:
    """Fetch `url` to `dest` atomically (temp file, then rename), with bounded waits and an optional sha256 check.

    Raises OSError/TimeoutError on network trouble and ValueError on a hash mismatch; `dest` is never half-written.
    """
    timeout = timeout if timeout is not None else _env_seconds(DOWNLOAD_TIMEOUT_ENV, DEFAULT_DOWNLOAD_TIMEOUT)
    deadline = deadline if deadline is not None else _env_seconds(DOWNLOAD_DEADLINE_ENV, DEFAULT_DOWNLOAD_DEADLINE)
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        pp = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        _resolve_bounded(pp.hostname or "", pp.port or 80, timeout)
    elif parts.hostname:
        _resolve_bounded(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    started = time.monotonic()
    hasher = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            log.info("downloading %s (%s) to %s", url, f"{total / 1e6:.1f} MB" if total else "size unknown", dest)
            done, next_report = 0, 0.1
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if time.monotonic() - started > deadline:
                    raise TimeoutError(f"download of {url} exceeded {deadline:g} s (${DOWNLOAD_DEADLINE_ENV})")
                if total and done / total >= next_report:
                    log.info("  %3.0f%% of %s", 100 * done / total, dest.name)
                    next_report += 0.1
        if sha256 and hasher.hexdigest() != sha256:
            raise ValueError(f"{url}: sha256 {hasher.hexdigest()} does not match the expected {sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: timeouts, refused/reset connections, server errors. Not: no DNS, 4xx, bad hash."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, socket.gaierror):
        return False  # no name resolution: offline, or a wrong host
    return isinstance(exc, (TimeoutError, ConnectionError))


def _download_with_retries(url: str, dest: Path, sha256: Optional[str]) -> Path:
    raw = os.environ.get(DOWNLOAD_ATTEMPTS_ENV, "")
    attempts = int(raw) if raw.strip().isdigit() and int(raw) >= 1 else DEFAULT_DOWNLOAD_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return download_file(url, dest, sha256)
        except OSError as exc:
            if attempt == attempts or not _transient(exc):
                raise
            wait = RETRY_BACKOFF_SECONDS * attempt
            log.warning("download of %s failed (%s); attempt %d of %d in %.0f s", url, exc, attempt + 1, attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _extract_tar(archive: Path, into: Path, source: _KerasSource) -> None:
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


def _read_from_archive(archive: Path, source: _KerasSource) -> dict[str, bytes]:
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
        raise ValueError(f"data.path: {str(archive)!r} is not a readable {source.name} archive: {exc}") from None
    missing = [f for f in source.files if f not in found]
    if missing:
        raise ValueError(
            f"data.path: archive {str(archive)!r} lacks {missing} under {source.archive_prefix}/; "
            f"expected the archive from {source.origin}"
        )
    return found


def _keras_files(source: _KerasSource, spec: DataSpec) -> Callable[[str], bytes]:
    """A reader for the dataset's files, fetching them first when they are missing and a download is possible."""
    dirs = keras_datasets_dirs(spec)
    if spec.path and not Path(spec.path).expanduser().is_dir():
        raise DataUnavailable(
            f"data.path: {spec.path!r} is not a folder; expected the folder holding the {source.name} files "
            f"(a Keras datasets cache like ~/.keras/datasets): {', '.join(source.files)} in "
            f"{_where(Path(spec.path) / source.layouts[0])}/ (create the folder to have them downloaded there)"
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

    allowed, why_not = _download_allowed()
    if not allowed:
        raise DataUnavailable(_missing_message(source, dirs, why_not))
    target = next((d for d in dirs if _writable(d)), None)
    if target is None:
        raise DataUnavailable(_missing_message(source, dirs, "none of these folders is writable for a download"))
    try:
        if source.archive_names:
            archive = _download_with_retries(source.origin, target / source.archive_names[0], source.sha256)
            _extract_tar(archive, target / source.layouts[0].split("/")[0], source)
        else:
            folder = target / source.layouts[0] if source.layouts[0] else target
            for f in source.files:
                if not (folder / f).is_file():
                    url = source.origin + f if source.per_file_origin else source.origin
                    _download_with_retries(url, folder / f, source.sha256)
    except (OSError, ValueError, tarfile.TarError) as exc:  # TimeoutError and URLError are OSErrors
        raise DataUnavailable(_missing_message(source, dirs, f"the download failed ({exc})")) from None
    folder = _find_data_dir(source, dirs)
    if folder is None:  # the archive did not hold what Keras' loader expects
        raise DataUnavailable(_missing_message(source, dirs, "the downloaded archive did not contain them"))
    return from_folder(folder)


# ---------------------------------------------------------------------------------------------- mnist(es)
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# As in the `meta` file of cifar-100-python (used when that file is absent).
CIFAR100_FINE_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]
CIFAR100_COARSE_CLASSES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]


def _load_mnist(spec: DataSpec, seed: int) -> _Raw:
    read = _keras_files(KERAS_SOURCES["mnist"], spec)
    expected = "expected an .npz with x_train, y_train, x_test, y_test"
    with _open_npz(io.BytesIO(read("mnist.npz")), "data.dataset: 'mnist': mnist.npz", expected) as f:
        try:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (KeyError, ValueError) as exc:
            raise ValueError(f"data.dataset: 'mnist': mnist.npz is not the Keras MNIST file ({exc}); {expected}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise ValueError(
                f"data.dataset: 'mnist': mnist.npz has {len(x)} images in 'x_{split}' but {len(y)} labels in "
                f"'y_{split}'; expected one label per image"
            )
    return _Raw(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], list(MNIST_CLASSES))


def _idx(blob: bytes, name: str, magic: int) -> np.ndarray:
    """Decode a gzip'd IDX file, checking the header that Keras' loader skips without reading."""
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError) as exc:
        raise ValueError(f"data.dataset: 'fashion_mnist': {name} is not a gzip file ({exc})") from None
    header = 16 if magic == 2051 else 8
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise ValueError(
            f"data.dataset: 'fashion_mnist': {name} has magic number {found}; expected {magic} "
            f"({'images' if magic == 2051 else 'labels'}, IDX format)"
        )
    count = int.from_bytes(raw[4:8], "big")
    data = np.frombuffer(raw, np.uint8, offset=header)
    if magic == 2051:
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        if data.size != count * rows * cols:
            raise ValueError(
                f"data.dataset: 'fashion_mnist': {name} holds {data.size} pixels; its header says "
                f"{count}x{rows}x{cols} (truncated file?)"
            )
        return data.reshape(count, rows, cols)
    if data.size != count:
        raise ValueError(f"data.dataset: 'fashion_mnist': {name} holds {data.size} labels; its header says {count}")
    return data


def _load_fashion_mnist(spec: DataSpec, seed: int) -> _Raw:
    read = _keras_files(KERAS_SOURCES["fashion_mnist"], spec)
    y_train = _idx(read("train-labels-idx1-ubyte.gz"), "train-labels-idx1-ubyte.gz", 2049)
    x_train = _idx(read("train-images-idx3-ubyte.gz"), "train-images-idx3-ubyte.gz", 2051)
    y_test = _idx(read("t10k-labels-idx1-ubyte.gz"), "t10k-labels-idx1-ubyte.gz", 2049)
    x_test = _idx(read("t10k-images-idx3-ubyte.gz"), "t10k-images-idx3-ubyte.gz", 2051)
    for split, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(f"data.dataset: 'fashion_mnist': {split} has {len(x)} images but {len(y)} labels")
    return _Raw(x_train, y_train, x_test, y_test, list(FASHION_MNIST_CLASSES))


# -------------------------------------------------------------------------------------------------- cifar
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are dicts of bytes, lists and numpy arrays: refuse every other global (no code execution)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar_pickle(blob: bytes, dataset: str, name: str) -> dict:
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure means "not a CIFAR file"
        raise ValueError(f"data.dataset: {dataset!r}: {name} is not a CIFAR python pickle ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"data.dataset: {dataset!r}: {name} holds a {type(d).__name__}; expected a dict")
    return {k.decode("utf8") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(blob: bytes, dataset: str, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _cifar_pickle(blob, dataset, name)
    if "data" not in d or label_key not in d:
        raise ValueError(
            f"data.dataset: {dataset!r}: {name} has keys {sorted(d)}; expected 'data' and {label_key!r}"
        )
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"data.dataset: {dataset!r}: {name} 'data' has shape {data.shape}; expected [N, 3072]")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if len(labels) != len(data):
        raise ValueError(f"data.dataset: {dataset!r}: {name} has {len(data)} images but {len(labels)} labels")
    # Rows are the R, G and B planes of a 32x32 image, each row-major: [N, 3, 32, 32] -> NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _meta_names(read: Callable[[str], bytes], meta_file: str, key: str, fallback: list[str], dataset: str) -> list[str]:
    try:
        blob = read(meta_file)
    except (OSError, KeyError):
        return list(fallback)
    names = _cifar_pickle(blob, dataset, meta_file).get(key)
    if not names or len(names) != len(fallback):
        return list(fallback)
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def _load_cifar10(spec: DataSpec, seed: int) -> _Raw:
    read = _keras_files(KERAS_SOURCES["cifar10"], spec)
    parts = [_cifar_batch(read(f"data_batch_{i}"), "cifar10", f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(read("test_batch"), "cifar10", "test_batch", "labels")
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    names = _meta_names(read, "batches.meta", "label_names", CIFAR10_CLASSES, "cifar10")
    return _Raw(x_train, y_train, x_test, y_test, names)


def _load_cifar100(spec: DataSpec, seed: int) -> _Raw:
    read = _keras_files(KERAS_SOURCES["cifar100"], spec)
    mode = spec.cifar100_label_mode
    x_train, y_train = _cifar_batch(read("train"), "cifar100", "train", f"{mode}_labels")
    x_test, y_test = _cifar_batch(read("test"), "cifar100", "test", f"{mode}_labels")
    fallback = CIFAR100_FINE_CLASSES if mode == "fine" else CIFAR100_COARSE_CLASSES
    names = _meta_names(read, "meta", f"{mode}_label_names", fallback, "cifar100")
    return _Raw(x_train, y_train, x_test, y_test, names)


# ------------------------------------------------------------------------------------------- image folder
def _to_target_mode(im, color_mode: str):
    """Return a PIL image in mode 'L' or 'RGB': grayscale stays grey under 'keep', everything else becomes RGB.

    Alpha is dropped (as tf.io.decode_image with 3 channels does); 16-bit grey is scaled, not clipped.
    """
    from PIL import Image

    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if (im.mode == "PA" or "transparency" in im.info) else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 1.0
        im = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    grey = im.mode in ("1", "L", "LA")
    target = {"grayscale": "L", "rgb": "RGB"}.get(color_mode, "L" if grey else "RGB")
    return im if im.mode == target else im.convert(target)


def _decode_image(path: Path, size: tuple[int, int], color_mode: str):
    """(array [H, W, C] uint8, None) or (None, reason). Never raises: a bad file must not stop the others."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(None, (w, h))  # DCT-domain downscale: decodes big photos several times faster
            im = _to_target_mode(im, color_mode)
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 -- PIL raises many types for bad files; all mean "skip it"
        if isinstance(exc, UnidentifiedImageError):
            return None, "not an image Pillow can read"
        return None, f"{type(exc).__name__}: {str(exc).replace(str(path), '<file>')}"
    return (arr[..., None] if arr.ndim == 2 else arr), None


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(root: Path, classes: list[str]) -> list[tuple[Path, str]]:
    """Every non-hidden file under each class folder (recursively, like Keras), in sorted order."""
    out = []
    for c in classes:
        cdir = root / c
        if not cdir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(cdir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend((Path(dirpath) / f, c) for f in sorted(filenames) if not f.startswith("."))
    return out


def _decode_all(files: list[tuple[Path, str]], class_index: dict[str, int], size, color_mode, root: Path):
    """Decode into one preallocated array (a 224x224 Stanford Dogs is 3 GB: no per-image list, no second copy).

    Returns (x [n_ok, h, w, C], labels, grey mask [n_ok], skipped [(path, reason)]). C is 1 for 'grayscale',
    else 3 (grey images under 'keep' are replicated; the caller keeps one channel when every image is grey).
    """
    h, w = size
    channels = 1 if color_mode == "grayscale" else 3
    x = np.empty((len(files), h, w, channels), dtype=np.uint8)
    grey = np.zeros(len(files), dtype=bool)
    reasons: list[Optional[str]] = [None] * len(files)

    def work(i: int) -> None:
        arr, reason = _decode_image(files[i][0], size, color_mode)
        if arr is None:
            reasons[i] = reason
            return
        x[i] = arr  # (h, w, 1) broadcasts into 3 channels
        grey[i] = arr.shape[-1] == 1

    workers = max(1, min(8, 2 * (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        list(pool.map(work, range(len(files))))
    ok = [i for i, r in enumerate(reasons) if r is None]
    skipped = [(files[i][0].relative_to(root), reasons[i]) for i in range(len(files)) if reasons[i] is not None]
    for j, i in enumerate(ok):  # compact in place over the skipped slots
        if i != j:
            x[j] = x[i]
    labels = np.asarray([class_index[files[i][1]] for i in ok], dtype=np.int64)
    return x[: len(ok)], labels, grey[ok], skipped


def _load_image_folder(spec: DataSpec, seed: int) -> _Raw:
    root = Path(spec.path).expanduser()  # type: ignore[arg-type]  # the spec requires a path for image_folder
    layout_hint = "expected a folder with one sub-folder per class (root/<class>/<image>), optionally under root/train and root/test"
    if not root.exists():
        raise DataUnavailable(f"data.path: folder {spec.path!r} does not exist; {layout_hint}")
    if not root.is_dir():
        raise ValueError(f"data.path: {spec.path!r} is a file, not a folder; {layout_hint}")
    notes: list[str] = []
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    if (root / "test").is_dir() and not split_layout:
        raise ValueError(
            f"data.path: {spec.path!r} has a test/ sub-folder but no train/; expected both train/ and test/ "
            "(root/train/<class>/<image>, root/test/<class>/<image>) or neither (root/<class>/<image>)"
        )
    train_root = root / "train" if split_layout else root
    found = _class_dirs(train_root)
    if len(found) < 2:
        raise ValueError(
            f"data.path: {str(train_root)!r} has {len(found)} class sub-folder{'s' if len(found) != 1 else ''} "
            f"{found}; {layout_hint}, with at least 2 classes"
        )
    classes = found
    if spec.class_names is not None:
        # Like Keras' image_dataset_from_directory(class_names=...): the folder names, listed to fix label order.
        if sorted(spec.class_names) != found:
            missing = sorted(set(spec.class_names) - set(found))
            extra = sorted(set(found) - set(spec.class_names))
            raise ValueError(
                f"data.class_names: for image_folder they must name the class folders of {str(train_root)!r} "
                f"(they set the label order); no folder for {missing}, folders not listed {extra}"
            )
        classes = list(spec.class_names)
    class_index = {c: i for i, c in enumerate(classes)}

    size = tuple(spec.resize) if spec.resize is not None else DEFAULT_IMAGE_FOLDER_SIZE
    if spec.resize is None:
        msg = f"data.resize is not set: image_folder images are resized to {size[0]}x{size[1]} (height x width)"
        log.info(msg)
        notes.append(msg)

    started = time.monotonic()
    train_files = _list_images(train_root, classes)
    test_files: list[tuple[Path, str]] = []
    if split_layout:
        test_classes = _class_dirs(root / "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise ValueError(
                f"data.path: {str(root / 'test')!r} has class folders {unknown} that {str(train_root)!r} lacks; "
                "expected the test classes to be among the training classes"
            )
        test_files = _list_images(root / "test", test_classes)
    x_all, y_tr, grey_tr, skipped = _decode_all(train_files, class_index, size, spec.color_mode, root)
    x_te, y_te, grey_te, skipped_te = _decode_all(test_files, class_index, size, spec.color_mode, root)
    skipped += skipped_te

    if skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        msg = f"skipped {len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''} (not an image or corrupt): {shown}{more}"
        log.warning(msg)
        for p, r in skipped:
            log.debug("skipped %s: %s", p, r)
        notes.append(msg)
    if not len(x_all):
        raise ValueError(f"data.path: no readable images under {str(train_root)!r}; {layout_hint}")
    if split_layout and not len(x_te):
        raise ValueError(f"data.path: no readable images under {str(root / 'test')!r}; expected test/<class>/<image>")

    # 'keep' leaves an all-grey folder with one channel; a mix of grey and colour becomes RGB throughout.
    n_grey, n_all = int(grey_tr.sum() + grey_te.sum()), len(grey_tr) + len(grey_te)
    if spec.color_mode == "keep" and n_grey == n_all:
        x_all, x_te = x_all[..., :1], x_te[..., :1]
    elif spec.color_mode == "keep" and n_grey:
        notes.append(f"converted {n_grey} grayscale image{'s' if n_grey != 1 else ''} to RGB (data.color_mode: keep, the folder mixes both)")
    empty = [c for i, c in enumerate(classes) if not np.any(y_tr == i)]
    if empty:
        msg = f"classes without training images: {empty}"
        log.warning(msg)
        notes.append(msg)

    rng = np.random.default_rng(seed)
    if split_layout:
        train_idx, test_idx = np.arange(len(x_all)), np.arange(len(x_te))
        test_source = x_te
    else:
        train_idx, test_idx = _stratified_holdout(y_tr, spec.test_fraction, rng)
        y_te, test_source = y_tr, x_all
        notes.append(f"no train/ and test/ sub-folders: held out {len(test_idx)} images ({spec.test_fraction:g} per class) as the test set")
    # Files are listed class by class; shuffle (with the seed) so a validation split taken from the end, as Keras
    # does, holds every class -- image_dataset_from_directory shuffles its file list the same way. One gather per
    # split, so the peak is the decoded array plus one copy.
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    x_train, y_train = np.ascontiguousarray(x_all[train_idx]), y_tr[train_idx]
    x_test, y_test = np.ascontiguousarray(test_source[test_idx]), y_te[test_idx]
    del x_all, test_source, x_te
    log.info(
        "image_folder: %d train and %d test images in %d classes from %s, %dx%dx%d, decoded in %.1f s",
        len(x_train), len(x_test), len(classes), root, *x_train.shape[1:], time.monotonic() - started,
    )
    return _Raw(x_train, y_train, x_test, y_test, list(classes), 255.0, notes, names_resolved=True)


# ---------------------------------------------------------------------------------------------------- npz
def _npz_images(x: np.ndarray, key: str, file: str, notes: list[str]) -> np.ndarray:
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise ValueError(
            f"data.path: {file} array {key!r} has shape {list(x.shape)}; expected [N, height, width] or "
            "[N, height, width, channels] with 1 or 3 channels (NHWC)"
        )
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "biuf":
        raise ValueError(f"data.path: {file} array {key!r} has dtype {x.dtype}; expected uint8 pixels")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if x.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        notes.append(f"{key}: float pixels in [0, 1] scaled to 0..255 uint8")
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        if x.dtype.kind == "f" and not np.all(x == np.rint(x)):
            notes.append(f"{key}: float pixels in [0, 255] rounded to uint8")
        return np.rint(x).astype(np.uint8)
    raise ValueError(
        f"data.path: {file} array {key!r} has values in [{lo:g}, {hi:g}]; expected uint8 pixels 0..255 "
        "(or floats in [0, 1])"
    )


def _npz_labels(y: np.ndarray, key: str, file: str, n: int, notes: list[str]) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:
        if y.dtype.kind not in "biuf":
            raise ValueError(f"data.path: {file} array {key!r} has dtype {y.dtype}; expected one-hot numbers")
        one_hot = np.all((y == 0) | (y == 1), axis=1) & (np.count_nonzero(y == 1, axis=1) == 1)
        if not np.all(one_hot):
            i = int(np.argmin(one_hot))
            row = y[i]
            if row.size <= 10:
                shown = f"is {row.tolist()}"
            else:
                nonzero = {int(c): row[c].item() for c in np.flatnonzero(row)[:10]}
                shown = f"has nonzero values {nonzero} (column: value)"
            raise ValueError(
                f"data.path: {file} array {key!r} has shape {list(y.shape)} but row {i} {shown}; expected one-hot "
                "rows (a single 1, zeros elsewhere) or [N] integer class indices"
            )
        notes.append(f"{key}: one-hot labels converted to class indices")
        y = np.argmax(y, axis=1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1:
        raise ValueError(f"data.path: {file} array {key!r} has shape {list(y.shape)}; expected [N] integer labels")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(y == np.rint(y))):
        raise ValueError(f"data.path: {file} array {key!r} has dtype {y.dtype}; expected integer class indices")
    if len(y) != n:
        raise ValueError(f"data.path: {file} has {n} images but {len(y)} labels in {key!r}; expected one label per image")
    if len(y) and y.min() < 0:
        raise ValueError(f"data.path: {file} array {key!r} has negative label {int(y.min())}; expected 0..num_classes-1")
    return y.astype(np.int64)


def _load_npz(spec: DataSpec, seed: int) -> _Raw:
    path = Path(spec.path).expanduser()  # type: ignore[arg-type]
    file = repr(str(path))
    expected = "expected x_train, y_train and optionally x_test, y_test, class_names"
    if not path.is_file():
        raise DataUnavailable(
            f"data.path: {spec.path!r} {'is a folder' if path.is_dir() else 'does not exist'}; expected an .npz "
            f"file ({expected}); write one with numpy.savez(path, x_train=..., y_train=...)"
        )
    npz = _open_npz(path, f"data.path: {file}", f"{expected}; write one with numpy.savez(path, x_train=..., y_train=...)")
    with npz:
        keys = sorted(npz.files)

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except ValueError as exc:  # object arrays need pickle, which a data file must not run
                raise ValueError(
                    f"data.path: {file} array {key!r} is an object array ({exc}); store numbers, and class names "
                    "as a fixed-width string array (np.array(names, dtype=str))"
                ) from None

        for key in ("x_train", "y_train"):
            if key not in keys:
                raise ValueError(f"data.path: {file} has no array {key!r}; found keys {keys}; {expected}")
        has_xt, has_yt = "x_test" in keys, "y_test" in keys
        if has_xt != has_yt:
            present, absent = ("x_test", "y_test") if has_xt else ("y_test", "x_test")
            raise ValueError(f"data.path: {file} has {present!r} but no {absent!r}; found keys {keys}; {expected}")
        notes: list[str] = []
        x_train = _npz_images(get("x_train"), "x_train", file, notes)
        y_train = _npz_labels(get("y_train"), "y_train", file, len(x_train), notes)
        train_classes = np.unique(y_train)
        if len(train_classes) < 2:
            found = f"only label {int(train_classes[0])}" if len(train_classes) else "no labels"
            raise ValueError(f"data.path: {file} array 'y_train' has {found}; expected at least 2 classes")
        if has_xt:
            x_test = _npz_images(get("x_test"), "x_test", file, notes)
            y_test = _npz_labels(get("y_test"), "y_test", file, len(x_test), notes)
            if _as_nhwc_uint8(x_test[:0]).shape[1:] != _as_nhwc_uint8(x_train[:0]).shape[1:]:
                raise ValueError(
                    f"data.path: {file} x_test images are {list(x_test.shape[1:])} but x_train images are "
                    f"{list(x_train.shape[1:])}; expected the same shape"
                )
            unseen = np.setdiff1d(y_test, train_classes)
            if unseen.size:
                more = f" ... ({unseen.size} in all)" if unseen.size > 20 else ""
                raise ValueError(
                    f"data.path: {file} array 'y_test' has labels {unseen[:20].tolist()}{more} that 'y_train' lacks; "
                    "expected the test classes to be among the training classes"
                )
        else:
            train_idx, test_idx = _stratified_holdout(y_train, spec.test_fraction, np.random.default_rng(seed))
            x_test, y_test = x_train[test_idx], y_train[test_idx]
            x_train, y_train = x_train[train_idx], y_train[train_idx]
            notes.append(f"no x_test/y_test: held out {len(test_idx)} examples ({spec.test_fraction:g} per class) as the test set")
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
        if "class_names" in keys:
            names = [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in get("class_names").reshape(-1).tolist()]
            if num_classes > len(names):
                raise ValueError(
                    f"data.path: {file} has labels up to {num_classes - 1} but class_names lists {len(names)} names; "
                    "expected one name per class"
                )
        else:
            names = [str(i) for i in range(num_classes)]
    return _Raw(x_train, y_train, x_test, y_test, names, 255.0, notes)


_LOADERS: dict[str, Callable[[DataSpec, int], _Raw]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "image_folder": _load_image_folder,
    "npz": _load_npz,
}


def _convert(x: np.ndarray, spec: DataSpec) -> np.ndarray:
    x = _as_nhwc_uint8(x)
    if spec.color_mode == "grayscale" and x.shape[-1] != 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: x.shape[-1]]
        x = _as_nhwc_uint8((x[..., :3].astype(np.float32) @ (weights / weights.sum()))[..., None])
    elif spec.color_mode == "rgb" and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if spec.resize is not None and len(x) and tuple(x.shape[1:3]) != tuple(spec.resize):
        from PIL import Image

        h, w = spec.resize

        # Serial on purpose: PIL takes ~0.06 ms per small image, less than a thread pool's per-item overhead.
        x = np.stack(
            [
                np.asarray(Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).resize((w, h), Image.Resampling.BILINEAR))
                for img in x
            ]
        )
        x = _as_nhwc_uint8(x)
    return x


def load_dataset(spec: DataSpec) -> LoadedData:
    """Held-out splits are seeded by `spec.split_seed`, never by the run's training seed, so runs with different
    training seeds (sweep trials, ensemble members) are scored on the same test and validation images."""
    if spec.dataset not in _LOADERS:
        raise NotImplementedError(f"dataset {spec.dataset!r} has no loader yet")
    seed = spec.split_seed
    raw = _LOADERS[spec.dataset](spec, seed)
    class_names, pixel_max = raw.class_names, raw.pixel_max
    x_train, x_test = _convert(raw.x_train, spec), _convert(raw.x_test, spec)
    y_train = np.asarray(raw.y_train).reshape(-1).astype(np.int64)
    y_test = np.asarray(raw.y_test).reshape(-1).astype(np.int64)
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and y.min() < 0:  # one_hot of a negative label is all zeros: it would train on nothing
            raise ValueError(f"data.dataset: {spec.dataset!r} {split} labels must be class indices >= 0; received "
                             f"{int(y.min())} at index {int(np.argmin(y))}")

    if not len(x_test):
        raise ValueError(
            f"data.test_fraction={spec.test_fraction:g}: dataset {spec.dataset!r} ends with no test examples; "
            "expected at least one (raise test_fraction or add data)"
        )

    v = spec.validation
    if v.use_test:
        x_val, y_val = x_test, y_test
    elif v.train_size is not None:
        if v.train_size >= len(x_train):
            raise ValueError(
                f"data.validation.train_size={v.train_size} leaves no validation data: the training set has "
                f"{len(x_train)} examples"
            )
        x_train, y_train, x_val, y_val = x_train[: v.train_size], y_train[: v.train_size], x_train[v.train_size:], y_train[v.train_size:]
    else:
        x_train, y_train, x_val, y_val = _split_off(x_train, y_train, v.fraction, seed, v.shuffle)
        if not len(x_val) or not len(x_train):
            raise ValueError(
                f"data.validation.fraction={v.fraction:g} of {len(x_train) + len(x_val)} training examples leaves "
                f"{len(x_train)} for training and {len(x_val)} for validation; expected at least one in each"
            )

    if spec.max_train_examples is not None:
        x_train, y_train = x_train[: spec.max_train_examples], y_train[: spec.max_train_examples]

    if spec.class_names is not None and not raw.names_resolved:
        if len(spec.class_names) != len(class_names):
            raise ValueError(
                f"data.class_names has {len(spec.class_names)} names but dataset {spec.dataset!r} has "
                f"{len(class_names)} classes"
            )
        class_names = list(spec.class_names)
    top = max((int(a.max()) for a in (y_train, y_val, y_test) if a.size), default=-1)
    if top >= len(class_names):
        raise ValueError(
            f"data.class_names: dataset {spec.dataset!r} has label {top} but only {len(class_names)} class names; "
            "expected labels 0..num_classes-1"
        )
    return LoadedData(x_train, y_train, x_val, y_val, x_test, y_test, class_names, pixel_max, list(raw.notes))


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m jobs.data --spec FILE`: load (downloading if needed) and describe a spec's data, without TensorFlow.

    Use it to fill a cache before training (e.g. an init container writing to the PVC) or to check a folder.
    Exit codes as jobs.exit_codes: 0 ok, 2 bad spec or data, 3 data unavailable.
    """
    import argparse
    import sys

    from jobs import exit_codes
    from jobs.spec import SpecError, load_spec

    parser = argparse.ArgumentParser(prog="python -m jobs.data", description=main.__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="job spec YAML")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        spec = load_spec(args.spec)
        data = load_dataset(spec.data)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return exit_codes.BAD_SPEC
    except DataUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.DATA_UNAVAILABLE
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.BAD_SPEC
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    print(
        f"{spec.data.dataset}: train {len(data.x_train)}, validation {len(data.x_val)}, test {len(data.x_test)}; "
        f"input {list(data.input_shape)} uint8 (pixel max {data.pixel_max:g}); {data.num_classes} classes, "
        f"{int(counts.min())}..{int(counts.max())} training images per class"
    )
    print("classes: " + ", ".join(data.class_names[:20]) + (" ..." if data.num_classes > 20 else ""))
    for note in data.notes:
        print(f"note: {note}")
    return exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
