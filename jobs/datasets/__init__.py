"""Dataset loaders, one module per source (as keras.datasets): every dataset the spec names, read into uint8 image
arrays with integer labels, or (tfrecord, large image folders) streamed by `jobs.pipeline`.

Resizing and colour conversion happen here (images of an image folder differ in size, so a fixed size must be
chosen before batching); rescaling and standardization happen inside the model graph, so the exported model
takes raw pixels.

The Keras datasets (mnist, fashion_mnist, cifar10, cifar100) are read with numpy from the very files
`keras.datasets.<name>.load_data()` caches (`keras_cache`), so a cache filled by Keras (3.x or tf-keras 2.x) is used
as is and no TensorFlow import is needed. A missing file is downloaded (`download`) from the same origin Keras uses,
with a bounded timeout, into the same place; when that is impossible `DataUnavailable` names every file wanted and
where to put it.

Nothing here imports TensorFlow.
"""

from jobs.datasets.base import DataUnavailable, LoadedData
from jobs.datasets.cifar import CIFAR10_CLASSES, CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES
from jobs.datasets.download import download_file
from jobs.datasets.fashion_mnist import FASHION_MNIST_CLASSES
from jobs.datasets.image_folder import DEFAULT_IMAGE_FOLDER_SIZE
from jobs.datasets.keras_cache import KERAS_SOURCES, keras_datasets_dirs
from jobs.datasets.load import load_dataset
from jobs.datasets.mnist import MNIST_CLASSES

__all__ = [
    "CIFAR10_CLASSES", "CIFAR100_COARSE_CLASSES", "CIFAR100_FINE_CLASSES", "DEFAULT_IMAGE_FOLDER_SIZE",
    "FASHION_MNIST_CLASSES", "KERAS_SOURCES", "MNIST_CLASSES", "DataUnavailable", "LoadedData", "download_file",
    "keras_datasets_dirs", "load_dataset",
]
