"""Test models that behave as TF Serving's published test models do, built by jobctl's tests at test time.

TF Serving's model-server tests run against half_plus_two (y = 0.5 x + 2) in a TF1 and a TF2 flavour and against
half_plus_three (y = 0.5 x + 3). This module builds models with those published behaviours from scratch (the
workplace does not allow committing TF Serving's own files): what a client sees (signature keys, aliases,
tensor names, dtypes, shapes, method names, answers) is what TF Serving's tests ask of them. Each lands in TF
Serving's layout, `<base>/00000123/`.

    python -m tests.support.tfserving_models keras OUT_DIR

builds the two Keras Sequential models of the Keras cases in a child process: they need tf-keras (Keras 2, whose
saved signatures keep the layers' names `x`/`y`; Keras 3 renames them) and, for the distribution-strategy one,
virtual CPUs configured before TensorFlow starts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

VERSION = 123
VERSION_DIR = "00000123"  # TF Serving's test models use zero-padded version directories
ASSET_NAME = "foo.txt"
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _publish(build, base: Path) -> Path:
    """Build into a temp directory beside the version, then rename: a server polling `base` never sees half."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
    build(tmp / "model")
    final = base / VERSION_DIR
    os.rename(tmp / "model", final)
    shutil.rmtree(tmp)
    return final


def _write_asset(directory: Path) -> Path:
    path = Path(directory) / ASSET_NAME
    path.write_text("asset-file-contents")
    return path


def _tf1_saved_model(export_dir: Path, half_plus: float, *, example_signatures: bool, declared_x_shape=None) -> None:
    """A TF1 graph (placeholders, variables, a session) saved with SavedModelBuilder.

    y = a * x + b with a = 0.5 and b = `half_plus`. With `example_signatures`, x comes from serialized tf.Examples
    (feature `x`, one float) fed to the string placeholder `tf_example`, so Classify and Regress can run on it, and
    the graph also has y2 = a * x + 3 and, from a float placeholder x2, y3 = a * x2 + 3. Without, x is a float
    placeholder of shape [None]; `declared_x_shape` makes serving_default declare another shape for it than the
    graph has (a model TF Serving serves, since its session feeds whatever arrives)."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    v1 = tf.compat.v1
    build_info = v1.saved_model.utils.build_tensor_info
    graph = tf.Graph()
    # TF1's builder is the point here: its "use TF2 instead" notices are noise
    with graph.as_default(), deprecation.silence():
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(half_plus, name="b")
        signatures = {}
        if example_signatures:
            c = v1.Variable(3.0, name="c")
            serialized = v1.placeholder(tf.string, name="tf_example")
            parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
            parsed["x"].set_shape([None, 1])  # the examples' rank is unknown; each holds one x
            x = tf.identity(parsed["x"], name="x")
            y = tf.add(a * x, b, name="y")
            y2 = tf.add(a * x, c, name="y2")
            x2 = v1.placeholder(tf.float32, [None, 1], name="x2")
            y3 = tf.add(a * x2, c, name="y3")
            examples = build_info(serialized)
            signatures["classify_x_to_y"] = ({"inputs": examples}, {"scores": build_info(y)}, CLASSIFY)
            signatures["regress_x_to_y"] = ({"inputs": examples}, {"outputs": build_info(y)}, REGRESS)
            signatures["regress_x_to_y2"] = ({"inputs": examples}, {"outputs": build_info(y2)}, REGRESS)
            signatures["regress_x2_to_y3"] = ({"inputs": build_info(x2)}, {"outputs": build_info(y3)}, REGRESS)
        else:
            x = v1.placeholder(tf.float32, [None], name="x")
            y = tf.add(a * x, b, name="y")
        x_info = build_info(x)
        if declared_x_shape is not None:
            x_info.tensor_shape.Clear()
            for size in declared_x_shape:
                x_info.tensor_shape.dim.add().size = size
        signatures["serving_default"] = ({"x": x_info}, {"y": build_info(y)}, PREDICT)

        asset_dir = Path(tempfile.mkdtemp(prefix="asset-"))
        asset = v1.constant(str(_write_asset(asset_dir)), name="asset_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={key: v1.saved_model.signature_def_utils.build_signature_def(ins, outs, method)
                                   for key, (ins, outs, method) in signatures.items()},
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                strip_default_attrs=True)
            builder.save()
        shutil.rmtree(asset_dir)


def half_plus_two_tf1(base: Path) -> Path:
    """TF1 half_plus_two: serving_default (x [?,1] -> y), classify_x_to_y, regress_x_to_y, regress_x_to_y2 and
    regress_x2_to_y3, an asset file; `<base>/00000123`."""
    return _publish(lambda d: _tf1_saved_model(d, 2.0, example_signatures=True), base)


def half_plus_three_tf1(base: Path) -> Path:
    """TF1 half_plus_three: serving_default declares x as [?,1], the graph's placeholder is [?]; `<base>/00000123`."""
    return _publish(lambda d: _tf1_saved_model(d, 3.0, example_signatures=False, declared_x_shape=[-1, 1]), base)


def _tf2_half_plus_two(export_dir: Path) -> None:
    """tf.Module with tf.function signatures; TF2's saver marks every signature `predict`, as TF Serving's TF2
    test model has them."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = tf.Variable(0.5), tf.Variable(2.0), tf.Variable(3.0)
            self.asset = tf.saved_model.Asset(str(_write_asset(Path(export_dir).parent)))

        def _x(self, serialized):
            return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_y2(self, inputs):
            return {"outputs": self.a * self._x(inputs) + self.c}

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="inputs")])
        def regress_x2(self, inputs):
            return {"outputs": self.a * inputs + self.c}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(export_dir), signatures={
        "serving_default": module.predict, "classify_x_to_y": module.classify, "regress_x_to_y": module.regress,
        "regress_x_to_y2": module.regress_y2, "regress_x2_to_y3": module.regress_x2})


def half_plus_two_tf2(base: Path) -> Path:
    return _publish(_tf2_half_plus_two, base)


def _v1_times_v2(export_dir: Path) -> None:
    """tf.saved_model.save of a tf.function over two variables (3 and 2) with no declared input shape."""
    import tensorflow as tf

    root = tf.Module()
    root.v1, root.v2 = tf.Variable(3.0), tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, str(export_dir), signatures=root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))


def tf_saved_model_save(base: Path) -> Path:
    """y = 3 * 2 * x as serving_default (what TF Serving's test_tf_saved_model_save saves)."""
    return _publish(_v1_times_v2, base)


def _two_constant_signatures(export_dir: Path) -> None:
    import tensorflow as tf

    root = tf.Module()
    spec = [tf.TensorSpec(None, tf.float32)]
    root.f = tf.function(lambda x: {"y": tf.constant(1.0)}, input_signature=spec)
    root.g = tf.function(lambda x: {"y": tf.constant(2.0)}, input_signature=spec)
    tf.saved_model.save(root, str(export_dir), signatures={"serving_default": root.f, "custom_signature_key": root.g})


def tf_saved_model_save_multiple_signatures(base: Path) -> Path:
    """serving_default answers y = 1, custom_signature_key y = 2, whatever x is."""
    return _publish(_two_constant_signatures, base)


# --- model config files, as TF Serving's tests write them (text protos) -------------------------------------

def model_config(models: dict[str, Path]) -> str:
    """A ModelServerConfig text proto serving each name from its base path."""
    entries = ",\n".join(f'  config: {{\n    name: "{name}",\n    base_path: "{path}",\n    model_platform: "tensorflow"\n  }}'
                         for name, path in models.items())
    return f"model_config_list: {{\n{entries}\n}}\n"


BAD_MODEL_CONFIG = "improperly formatted file"  # not a ModelServerConfig text proto
# TF Serving's test batching parameters: large batches, no timeout, a deep queue, 8 threads
BATCHING_PARAMETERS = ("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                       "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n")
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
MONITORING_CONFIG = f'prometheus_config: {{\n  enable: true,\n  path: "{PROMETHEUS_PATH}"\n}}\n'


# --- the Keras cases, in a child process -----------------------------------------------------------------------

def _keras_models(out: Path) -> None:
    """Keras 2 Sequential models with an input layer named x and an identity layer named y; the second is built
    under a MirroredStrategy over two virtual CPUs with a Dense(1) of weight 1 and bias 0 (answers are x either
    way)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    keras = tf.keras

    def sequential(dense: bool):
        model = keras.models.Sequential([keras.layers.Input(shape=(1,), dtype="float32", name="x")])
        if dense:
            model.add(keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
        model.add(keras.layers.Lambda(lambda t: t, name="y"))
        return model

    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        distributed = sequential(dense=True)
    _publish(lambda d: tf.saved_model.save(distributed, str(d)), out / "distrat")
    plain = sequential(dense=False)
    _publish(lambda d: tf.saved_model.save(plain, str(d)), out / "sequential")


def start_keras_models(out: Path):
    """Start building the Keras models under `out`/{sequential,distrat}/00000123; returns the child process.
    Its output goes to `out`/build.log (a pipe nobody reads yet could fill and stall it)."""
    import subprocess

    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "build.log", "w") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.support.tfserving_models", "keras", str(out)], env=env,
                                cwd=root, stdout=log, stderr=subprocess.STDOUT)


if __name__ == "__main__":
    if sys.argv[1:2] != ["keras"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.support.tfserving_models keras OUT_DIR")
    _keras_models(Path(sys.argv[2]))
