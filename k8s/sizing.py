"""Per-GPU sizing of a training pod, and warnings where a spec wastes GPUs. Pure functions of the JobSpec.

The rule (docs/kubernetes.md, "Sizing per GPU"), from the figures in ../shared/ANCHORS.md:
- CPU: 8 cores per GPU. jobctl's input pipeline, with augmentation on the host, made 16-20k images/s per core at
  32x32 (`make bench`, dogs recipe: 32k and 39k images/s on 2 cores). One H200 at per-replica batch 256 consumes
  98k-213k images/s of jobctl's recipes (cifar10-cnn 134k): 7-8 cores to keep it fed. At 224x224 the JPEG decode
  dominates: 948 images/s per core for Stanford-Dogs-sized JPEGs against ResNet-50's 4.8k images/s per GPU, 5 cores.
  8 covers both; the pod never asks for fewer than the 2 cores of a CPU job.
- Memory: 16 GiB per GPU. Measured on this machine (`python -m bench.bench_sizing`, 2 cores, batch 256, the dogs
  recipe's augmentation): TensorFlow's import is 631 MB RSS; jobctl's pipeline adds 305 MB at 32x32 and 1,466 MB at
  224x224 on top of the arrays it reads (CIFAR-10: 157 MB; 5k images at 224x224: 727 MB). Its parallel map and
  prefetch keep about as many batches in flight as there are cores, so at 8 cores per GPU the 224x224 pipeline
  holds ~6 GB; with the data set in memory and CUDA's host-side buffers (not measurable here) that is 10-12 GB,
  rounded up to 16 GiB for headroom: an OOMKilled pod loses its epoch, and GPU nodes carry 128-256 GB of RAM per
  GPU. /dev/shm (memory-backed, counted in that limit) is 2 GiB per GPU for NCCL's intra-node buffers and tf.data.
- Without GPUs: 2 cores, 8Gi, 1Gi /dev/shm (unchanged).
Explicit `resources.cpu`, `memory`, `shm_size` always win.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.spec import JobSpec
from jobs.spec.fields import QUANTITY

CPU_PER_GPU = 8
MEMORY_GIB_PER_GPU = 16
SHM_GIB_PER_GPU = 2
CPU_DEFAULT, MEMORY_DEFAULT, SHM_DEFAULT = "2", "8Gi", "1Gi"

# Per-replica batch from which a GPU is busy (ANCHORS.md: H200, Keras 3/JAX, images/s at batch 32 vs batch 256).
EFFICIENT_BATCH = 256
H200_IMAGES_PER_S = {  # recipe: (batch 32, batch 256)
    "digits-cnn": (23_311, 193_530),
    "fashion-mnist-mlp": (27_910, 213_386),
    "cifar10-cnn": (20_161, 134_185),
    "cifar10-cnn-dropout": (18_487, 133_134),
    "cifar10-batchnorm-cnn": (20_602, 128_984),
    "cifar10-separable-cnn": (11_727, 97_992),
}
PIPELINE_IMAGES_PER_S_PER_CORE = (16_000, 20_000)  # host augmentation, 32x32 (ANCHORS.md, make bench)


@dataclass(frozen=True)
class PodSize:
    cpu: str
    memory: str
    shm_size: str


def pod_size(spec: JobSpec) -> PodSize:
    """The cpu, memory and /dev/shm of one worker pod: the spec's, else the per-GPU rule (module doc)."""
    res = spec.resources
    gpus = res.gpus
    return PodSize(
        cpu=res.cpu or (str(CPU_PER_GPU * gpus) if gpus else CPU_DEFAULT),
        memory=res.memory or (f"{MEMORY_GIB_PER_GPU * gpus}Gi" if gpus else MEMORY_DEFAULT),
        shm_size=res.shm_size or (f"{SHM_GIB_PER_GPU * gpus}Gi" if gpus else SHM_DEFAULT),
    )


def cores(quantity: str) -> float:
    """A CPU quantity ('500m', '2', '1.5') in cores."""
    number, suffix = QUANTITY.fullmatch(quantity).groups()
    if suffix == "m":
        return float(number) / 1000
    return float(number + suffix) if suffix[:1] in ("e", "E") else float(number)


def per_replica_batch(spec: JobSpec) -> int:
    replicas = max(spec.resources.gpus, 1) * spec.resources.workers
    t = spec.training
    return t.batch_size if t.batch_size_per == "replica" else max(t.batch_size // replicas, 1)


def gpu_waste_warnings(spec: JobSpec) -> list[str]:
    """Where the spec leaves GPUs idle, with the measured figures; never an error (a small batch can be a choice)."""
    res = spec.resources
    if not res.gpus:
        return []
    warnings = []
    batch = per_replica_batch(spec)
    if batch < EFFICIENT_BATCH:
        recipe = spec.name if spec.name in H200_IMAGES_PER_S else "cifar10-cnn"
        small, big = H200_IMAGES_PER_S[recipe]
        warnings.append(
            f"training.batch_size {spec.training.batch_size} (batch_size_per {spec.training.batch_size_per}) gives "
            f"each of the {max(res.gpus, 1) * res.workers} GPU replicas a batch of {batch}: a GPU idles at such "
            f"batches. On an H200, {recipe} trains at {small:,} images/s at batch 32 against {big:,} at batch 256 "
            f"({small / big:.0%}); expected a per-replica batch of {EFFICIENT_BATCH} or more (raise "
            "training.batch_size and scale the learning rate with it)"
        )
    if res.cpu is not None and cores(res.cpu) < CPU_PER_GPU * res.gpus:
        low, high = PIPELINE_IMAGES_PER_S_PER_CORE
        warnings.append(
            f"resources.cpu {res.cpu} for {res.gpus} GPU{'s' if res.gpus > 1 else ''}: the input pipeline makes "
            f"{low // 1000}-{high // 1000}k images/s per core at 32x32, and one H200 at batch 256 consumes about "
            f"134k images/s of cifar10-cnn, 7-8 cores' worth; expected cpu >= {CPU_PER_GPU * res.gpus} "
            f"({CPU_PER_GPU} per GPU), or leave resources.cpu unset"
        )
    return warnings
