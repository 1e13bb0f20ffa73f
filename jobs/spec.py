"""The job spec: YAML in, typed and validated objects out.

Validation happens here, at the boundary, and reports every mistake at once with its field path, the value
received and what is allowed. Everything past `load_spec` works with plain typed objects.
This module must stay light (no TensorFlow): the CLI imports it to validate and render manifests.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_IMAGE_SIDE = 4096
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def quantity_is_positive(v: str) -> bool:
    """A request or limit of zero or less is refused by the API server (or means no resources at all)."""
    try:
        return float(QUANTITY.fullmatch(v).group(1)) > 0
    except (AttributeError, ValueError):
        return False

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder", "npz")
TRANSFER_BASES = ("vgg16", "mobilenet_v2", "resnet50", "efficientnet_b0")


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------------------- data
class ValidationSplit(_Strict):
    """How the validation set is carved out of the training data.

    `fraction` takes the *last* fraction of the training set, like Keras' `validation_split` (seeds 002, 003).
    `train_size` keeps the first N examples for training and the rest for validation (seed 004: first 40k / last 10k).
    `use_test` validates on the test set (seeds 000, 001 do this; fine for demos, not for model selection).
    """

    fraction: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    train_size: Optional[int] = Field(default=None, ge=1)
    use_test: bool = False
    shuffle: bool = Field(default=False, description="shuffle (with the spec seed) before splitting")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ValidationSplit":
        chosen = [n for n, v in (("fraction", self.fraction), ("train_size", self.train_size), ("use_test", self.use_test)) if v]
        if len(chosen) > 1:
            raise ValueError(f"choose one of fraction, train_size, use_test; received {', '.join(chosen)}")
        if not chosen:
            self.fraction = 0.2
        return self


class DataSpec(_Strict):
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder", "npz"] = "digits"
    path: Optional[str] = Field(
        default=None,
        description="image_folder: the root with one sub-folder per class; npz: the file; Keras datasets: "
        "a cache directory to read instead of $KERAS_HOME/datasets",
    )
    validation: ValidationSplit = Field(default_factory=ValidationSplit)
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="held-out test share for datasets without a test split"
    )
    resize: Optional[tuple[int, int]] = Field(default=None, description="[height, width]")
    color_mode: Literal["keep", "grayscale", "rgb"] = "keep"
    class_names: Optional[list[str]] = None
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="cap for quick runs and sweeps")
    split_seed: int = Field(
        default=0, ge=0, description="fixes the held-out test/validation split independently of the training seed"
    )
    cifar100_label_mode: Literal["fine", "coarse"] = "fine"

    @field_validator("resize")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and (v[0] < 1 or v[1] < 1):
            raise ValueError(f"expected [height, width] with both >= 1, received {list(v)}")
        if v is not None and (v[0] > MAX_IMAGE_SIDE or v[1] > MAX_IMAGE_SIDE):
            # Every image is held in memory at this size: 100000x100000 RGB is 30 GB an image.
            raise ValueError(f"expected [height, width] with both <= {MAX_IMAGE_SIDE}, received {list(v)}")
        return v

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, v):
        if v is not None:
            if len(v) < 2:
                raise ValueError(f"expected at least 2 class names, received {len(v)}")
            if len(set(v)) != len(v):
                dup = sorted({n for n in v if v.count(n) > 1})
                raise ValueError(f"class names must be unique; duplicated: {dup}")
        return v

    @model_validator(mode="after")
    def _path_when_needed(self) -> "DataSpec":
        if self.dataset in ("image_folder", "npz") and not self.path:
            raise ValueError(f"dataset {self.dataset!r} needs data.path (the {'folder' if self.dataset == 'image_folder' else 'file'} to read)")
        return self


# -------------------------------------------------------------------------------------------------- model
class TransferSpec(_Strict):
    base: Literal["vgg16", "mobilenet_v2", "resnet50", "efficientnet_b0"] = "mobilenet_v2"
    weights: str = Field(default="imagenet", description="'none', 'imagenet' or the path of a local weights file")
    trainable: bool = Field(default=False, description="false: frozen base (feature extraction); true: fine-tune")
    fine_tune_from: Optional[int] = Field(
        default=None, ge=0, description="with trainable: freeze base layers before this index"
    )


class ModelSpec(_Strict):
    type: Literal["mlp", "cnn", "separable_cnn", "transfer"] = "cnn"
    conv_filters: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 64])
    kernel_size: Union[Annotated[int, Field(ge=1)], list[Annotated[int, Field(ge=1)]]] = 3
    padding: Literal["valid", "same"] = "valid"
    pooling: Literal["max", "avg", "none"] = "max"
    pool_after: Optional[list[Annotated[int, Field(ge=0)]]] = Field(
        default=None, description="0-based conv layer indices followed by a pooling layer; null: after every conv"
    )
    global_pooling: Literal["none", "avg", "max"] = Field(default="none", description="none: Flatten")
    dense_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64])
    activation: Literal["relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "leaky_relu"] = "relu"
    batch_norm: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="after each hidden dense layer")
    conv_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="after the conv stack (seed 001)")
    transfer: Optional[TransferSpec] = None

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        problems = []
        if isinstance(self.kernel_size, list) and self.type in ("cnn", "separable_cnn"):
            if len(self.kernel_size) != len(self.conv_filters):
                problems.append(
                    f"kernel_size has {len(self.kernel_size)} entries but conv_filters has {len(self.conv_filters)}; "
                    "expected one kernel size per conv layer or a single int"
                )
        if self.type in ("cnn", "separable_cnn") and not self.conv_filters:
            problems.append(f"model type {self.type!r} needs at least one entry in conv_filters")
        if self.pool_after is not None:
            bad = [i for i in self.pool_after if i >= len(self.conv_filters)]
            if bad:
                problems.append(f"pool_after indices {bad} are past the last conv layer (index {len(self.conv_filters) - 1})")
        if self.type == "transfer" and self.transfer is None:
            self.transfer = TransferSpec()
        if self.type != "transfer" and self.transfer is not None:
            problems.append(f"transfer settings given but model type is {self.type!r}; expected type: transfer")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def kernel_sizes(self) -> list[int]:
        if isinstance(self.kernel_size, int):
            return [self.kernel_size] * len(self.conv_filters)
        return list(self.kernel_size)


# ----------------------------------------------------------------------------------------- preprocessing
class PreprocessingSpec(_Strict):
    rescale: Union[Literal["auto"], float, None] = Field(
        default="auto",
        description="multiply pixels by this; 'auto' divides by the dataset's maximum value (255, or 16 for digits)",
    )
    standardize: bool = Field(default=False, description="feature-wise mean/variance adapted on the training data")

    @field_validator("rescale", mode="before")
    @classmethod
    def _fraction_strings(cls, v):
        # Users copy `rescale=1./255` from notebooks: accept "1/255" too.
        if isinstance(v, str) and v != "auto":
            m = re.fullmatch(r"\s*([0-9.]+)\s*/\s*([0-9.]+)\s*", v)
            if not m:
                raise ValueError(f"expected a number, 'auto', a fraction like '1/255' or null, received {v!r}")
            return float(m.group(1)) / float(m.group(2))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
            raise ValueError(f"expected a positive number, received {v}")
        return v


class AugmentationSpec(_Strict):
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(default=0.0, ge=0.0, le=1.0, description="fraction of a full turn, as keras RandomRotation")
    translation: float = Field(default=0.0, ge=0.0, lt=1.0, description="fraction of height/width")
    zoom: float = Field(default=0.0, ge=0.0, lt=1.0)
    contrast: float = Field(default=0.0, ge=0.0, lt=1.0)

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any((self.rotation, self.translation, self.zoom, self.contrast))


# ------------------------------------------------------------------------------------------------ training
class ScheduleSpec(_Strict):
    type: Literal["constant", "cosine", "step", "plateau"] = "constant"
    step_epochs: int = Field(default=10, ge=1, description="step: decay every N epochs")
    factor: float = Field(default=0.1, gt=0.0, lt=1.0, description="step and plateau: multiply the rate by this")
    patience: int = Field(default=2, ge=0, description="plateau: epochs without improvement before decaying")
    min_learning_rate: float = Field(default=0.0, ge=0.0)
    warmup_epochs: int = Field(default=0, ge=0)


class TrainingSpec(_Strict):
    optimizer: Literal["adam", "sgd", "rmsprop", "adadelta", "adamw"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, description="adamw (and decoupled decay for others)")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_size: int = Field(default=32, ge=1, le=65536)
    batch_size_per: Literal["global", "replica"] = Field(
        default="global", description="global: batch_size is split across replicas; replica: multiplied by them"
    )
    scale_learning_rate: bool = Field(default=False, description="multiply the learning rate by the replica count")
    epochs: int = Field(default=10, ge=1, le=100000)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    mixed_precision: bool = False
    deterministic: bool = Field(default=False, description="tf.config.experimental.enable_op_determinism")
    jit_compile: bool = Field(default=False, description="XLA; measured slower on CPU, so off by default")
    steps_per_execution: int = Field(
        default=16, ge=1, le=10000,
        description="batches per call into the compiled train step (Keras' compile(steps_per_execution)): fewer "
                    "Python round trips per epoch, measured 1.2-1.4x faster epochs on CPU; lowered to a divisor of "
                    "the steps per epoch so that every epoch is exactly one pass; 1: Keras' default. Distributed runs use 1 "
                    "(keras-team/keras#19246)",
    )
    shuffle_buffer: Optional[int] = Field(
        default=None, ge=1,
        description="none: a uniform shuffle of the whole training set every epoch (Keras fit(shuffle=True)); "
                    "N: tf.data's windowed shuffle over N examples; 1: the order as stored",
    )

    @model_validator(mode="after")
    def _settings_the_optimizer_and_schedule_use(self) -> "TrainingSpec":
        # A setting that would be silently ignored is a mistake the user should hear about.
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(f"nesterov applies to optimizer 'sgd' only, received optimizer {self.optimizer!r}")
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to optimizers 'sgd' and 'rmsprop', received optimizer "
                             f"{self.optimizer!r} with momentum {self.momentum}")
        sch = self.schedule
        if sch.warmup_epochs and sch.type == "plateau":
            raise ValueError("schedule.warmup_epochs applies to the constant, step and cosine schedules, not to "
                             f"plateau; received warmup_epochs {sch.warmup_epochs}")
        if sch.warmup_epochs >= self.epochs:
            raise ValueError(f"schedule.warmup_epochs: expected fewer than epochs ({self.epochs}), received "
                             f"{sch.warmup_epochs}")
        if sch.min_learning_rate >= self.learning_rate and sch.type != "constant":
            raise ValueError(f"schedule.min_learning_rate: expected below learning_rate ({self.learning_rate}), "
                             f"received {sch.min_learning_rate}")
        return self


# ----------------------------------------------------------------------------------------------- callbacks
# What every epoch logs (the loss and the one compiled metric, on training and validation data): a monitor must
# be one of them, or the run would train to the end and only then find nothing to choose the best epoch by.
Monitor = Literal["val_accuracy", "val_loss", "accuracy", "loss"]


def _direction(monitor: str) -> str:
    return "max" if "accuracy" in monitor else "min"


class CheckpointSpec(_Strict):
    monitor: Monitor = "val_accuracy"
    mode: Literal["auto", "min", "max"] = "auto"

    @model_validator(mode="after")
    def _mode_matches_the_monitor(self) -> "CheckpointSpec":
        if self.mode != "auto" and self.mode != _direction(self.monitor):
            raise ValueError(f"mode {self.mode!r} with monitor {self.monitor!r} keeps the worst epoch; expected "
                             f"mode {_direction(self.monitor)!r} or 'auto'")
        return self

    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return _direction(self.monitor)


class EarlyStoppingSpec(_Strict):
    enabled: bool = False
    monitor: Monitor = "val_loss"
    patience: int = Field(default=3, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best_weights: bool = True


class TensorBoardSpec(_Strict):
    enabled: bool = True
    histogram_freq: int = Field(default=0, ge=0)
    profile_batch: int = Field(default=0, ge=0)


class CallbacksSpec(_Strict):
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    tensorboard: TensorBoardSpec = Field(default_factory=TensorBoardSpec)
    csv_history: bool = True


# ------------------------------------------------------------------------------------------------- export
class ExportSpec(_Strict):
    model_name: Optional[str] = Field(default=None, description="default: the spec name")
    version: Union[Literal["increment", "timestamp"], Annotated[int, Field(ge=1)]] = "increment"
    input_dtype: Literal["uint8", "float32"] = "uint8"
    warmup_requests: int = Field(default=8, ge=0, le=1000, description="TF Serving reads at most 1000")

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", v):
            raise ValueError(f"expected letters, digits, '_', '.', '-' (at most 63), received {v!r}")
        return v


# ---------------------------------------------------------------------------------------------- resources
class Toleration(_Strict):
    key: Optional[str] = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Optional[str] = None
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None
    toleration_seconds: Optional[int] = None


class ResourcesSpec(_Strict):
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker (nvidia.com/gpu)")
    workers: int = Field(default=1, ge=1, le=64, description="worker pods; > 1 means MultiWorkerMirroredStrategy")
    cpu: str = "2"
    memory: str = "8Gi"
    shm_size: str = "1Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image: Optional[str] = Field(default=None, description="training image; default: the one matching this jobctl")
    active_deadline_seconds: Optional[int] = Field(default=None, ge=1)
    backoff_limit: int = Field(default=3, ge=0, le=100)

    @field_validator("cpu", "memory", "shm_size", mode="before")
    @classmethod
    def _quantity(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not QUANTITY.fullmatch(v):
            raise ValueError(f"expected a Kubernetes quantity such as '2', '500m', '16Gi', received {v!r}")
        if not quantity_is_positive(v):
            raise ValueError(f"expected a quantity above zero such as '2', '500m', '16Gi', received {v!r}")
        return v


class DistributionSpec(_Strict):
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = Field(
        default="auto",
        description="auto: multi_worker when TF_CONFIG is set, mirrored when several devices are visible, else default",
    )
    worker_timeout_seconds: int = Field(default=300, ge=1, description="how long to wait for peer workers")


# ------------------------------------------------------------------------------------------------------ job
class JobSpec(_Strict):
    name: str = Field(description="DNS-1123 label: lower-case letters, digits, '-'; at most 52 characters")
    description: str = ""
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    artifacts_dir: str = Field(default="artifacts", description="runs/ and models/ are written below it")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    callbacks: CallbacksSpec = Field(default_factory=CallbacksSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    distribution: DistributionSpec = Field(default_factory=DistributionSpec)
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on Kubernetes objects")

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v):
        # 52: the Indexed Job's pod hostname "<name>-<index>" and the Job controller's suffixes must fit 63.
        if len(v) > 52 or not DNS1123_LABEL.fullmatch(v):
            raise ValueError(
                "expected a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter "
                f"or digit, at most 52 characters), received {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "JobSpec":
        problems = []
        if self.distribution.strategy == "multi_worker" and self.resources.workers < 2:
            problems.append(
                "distribution.strategy 'multi_worker' needs resources.workers >= 2, "
                f"received workers={self.resources.workers}"
            )
        if self.distribution.strategy in ("default", "mirrored") and self.resources.workers > 1:
            problems.append(
                f"distribution.strategy {self.distribution.strategy!r} runs on one node, but resources.workers="
                f"{self.resources.workers}; expected 'auto' or 'multi_worker'"
            )
        if self.model.type == "transfer" and self.data.resize is None and self.model.transfer.base != "mobilenet_v2":
            pass  # the builder upsamples small inputs itself; nothing to reject
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- conveniences used across modules
    @property
    def model_name(self) -> str:
        return self.export.model_name or self.name

    def spec_hash(self) -> str:
        """Stable over key order and formatting; identifies what a run or an export was trained from."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------------------ loading & errors
class SpecError(Exception):
    """Every problem found in a spec; `str()` prints one line per problem."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk the model along `loc` (minus the offending key) to list the keys that are allowed there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = _first_model(ann)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def _first_model(annotation) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_exactly_one(), ValidationSplit]",) or "function-" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe_error(err: dict, model: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("function-" in p or p.startswith("literal["))))
    # Union members add their type name to the location (e.g. "int", "list[...]"): drop those segments.
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p in ("int", "float", "str", "bool") or "[" in p)))
    path = _format_loc(loc)
    received = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc)
        key = loc[-1] if loc else "?"
        hint = difflib.get_close_matches(str(key), allowed, n=1) or [
            a for a in (_ALIASES.get(str(key)),) if a in allowed
        ]
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{path}: unknown field{did_you_mean}; expected one of: {', '.join(allowed)}"
    if kind == "missing":
        return f"{path}: required field is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind.startswith("literal_error"):
        msg = "expected " + msg.removeprefix("Input should be ")
    elif msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ")
    if "received" in msg or isinstance(received, dict):
        return f"{path}: {msg}"
    return f"{path}: {msg}; received {received!r}"


# Names users bring from notebooks and Keras arguments.
_ALIASES = {"lr": "learning_rate", "batch": "batch_size", "epoch": "epochs", "optim": "optimizer",
            "filters": "conv_filters", "units": "dense_units", "dropout_rate": "dropout", "validation_split": "validation"}


def validation_problems(exc: ValidationError, model: type[BaseModel] = JobSpec) -> list[str]:
    seen, problems = set(), []
    for err in exc.errors(include_url=False):
        text = _describe_error(err, model)
        if text not in seen:
            seen.add(text)
            problems.append(text)
    return problems


_SWEEP_ONLY_FIELDS = ("base", "parameters", "objective", "algorithm")


def parse_spec(data: Any, source: str = "spec") -> JobSpec:
    if data is None:
        raise SpecError(["(top level): the spec is empty; expected a mapping of fields (name, data, model, training, "
                         "...; `jobctl init` writes a commented one)"], source)
    if not isinstance(data, dict):
        raise SpecError([f"(top level): expected a mapping of fields, received {type(data).__name__}"], source)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        sweep_fields = [f for f in _SWEEP_ONLY_FIELDS if f in data]
        if len(sweep_fields) >= 2 and "model" not in data:
            problems.insert(0, f"(top level): this is a sweep spec (it has {', '.join(sweep_fields)}), not a job "
                               "spec: run it with `jobctl sweep`")
        raise SpecError(problems, source) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the last one silently, so
    a pasted `learning_rate:` line would override the first without a word."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Union[str, Path]) -> Any:
    path = Path(path)
    if path.is_dir():
        raise SpecError([f"{str(path)!r} is a directory; expected a YAML file"], str(path))
    if not path.is_file():
        raise SpecError([f"file not found: {str(path)!r}"], str(path))
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"], str(path)) from None


def load_spec(path: Union[str, Path], overrides: Optional[dict[str, Any]] = None) -> JobSpec:
    """Read, apply dotted-path overrides (e.g. {'training.learning_rate': 0.01}), validate."""
    data = read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            data = {}
        data = apply_overrides(data, overrides)
    return parse_spec(data, str(path))


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Return a copy of `data` with each dotted path set; intermediate mappings are created as needed."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def parse_override_pairs(pairs: list[str]) -> dict[str, Any]:
    """`--set FIELD.PATH=VALUE` pairs -> {path: value}; values are YAML, so numbers and lists keep their type."""
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        if "=" not in pair:
            problems.append(f"--set expects FIELD.PATH=VALUE, received {pair!r}")
            continue
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problems.append(f"--set {key}: value {raw!r} is not valid YAML ({getattr(exc, 'problem', exc)})")
    if problems:
        raise SpecError(problems, "--set")
    return out


def field_exists(dotted: str) -> bool:
    """True when `dotted` names a field of JobSpec (used to reject unknown sweep parameters early)."""
    current: Any = JobSpec
    for part in dotted.split("."):
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return False
        nxt = _first_model(fields[part].annotation)
        current = nxt if nxt is not None else None
    return True
