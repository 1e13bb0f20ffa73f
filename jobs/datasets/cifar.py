"""CIFAR-10 and CIFAR-100, python version: pickled batches, read with an unpickler that only admits numpy arrays."""

from __future__ import annotations

import io
import pickle
from typing import Callable

import numpy as np

from jobs.datasets.base import Raw
from jobs.datasets.keras_cache import KERAS_SOURCES, keras_files
from jobs.errors import BadInputError
from jobs.spec import DataSpec

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
        raise BadInputError(f"data.dataset: {dataset!r}: {name} is not a CIFAR python pickle ({exc})") from None
    if not isinstance(d, dict):
        raise BadInputError(f"data.dataset: {dataset!r}: {name} holds a {type(d).__name__}; expected a dict")
    return {k.decode("utf8") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(blob: bytes, dataset: str, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _cifar_pickle(blob, dataset, name)
    if "data" not in d or label_key not in d:
        raise BadInputError(
            f"data.dataset: {dataset!r}: {name} has keys {sorted(d)}; expected 'data' and {label_key!r}"
        )
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise BadInputError(f"data.dataset: {dataset!r}: {name} 'data' has shape {data.shape}; expected [N, 3072]")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if len(labels) != len(data):
        raise BadInputError(f"data.dataset: {dataset!r}: {name} has {len(data)} images but {len(labels)} labels")
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


def load_cifar10(spec: DataSpec, seed: int) -> Raw:
    read = keras_files(KERAS_SOURCES["cifar10"], spec)
    parts = [_cifar_batch(read(f"data_batch_{i}"), "cifar10", f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(read("test_batch"), "cifar10", "test_batch", "labels")
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    names = _meta_names(read, "batches.meta", "label_names", CIFAR10_CLASSES, "cifar10")
    return Raw(x_train, y_train, x_test, y_test, names)


def load_cifar100(spec: DataSpec, seed: int) -> Raw:
    read = keras_files(KERAS_SOURCES["cifar100"], spec)
    mode = spec.cifar100_label_mode
    x_train, y_train = _cifar_batch(read("train"), "cifar100", "train", f"{mode}_labels")
    x_test, y_test = _cifar_batch(read("test"), "cifar100", "test", f"{mode}_labels")
    fallback = CIFAR100_FINE_CLASSES if mode == "fine" else CIFAR100_COARSE_CLASSES
    names = _meta_names(read, "meta", f"{mode}_label_names", fallback, "cifar100")
    return Raw(x_train, y_train, x_test, y_test, names)

