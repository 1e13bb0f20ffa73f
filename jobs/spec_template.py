"""The commented example spec `jobctl init` writes. It must validate and every value it shows must be the default
(tests/test_spec_template.py parses it and compares)."""

TEMPLATE = """\
# jobctl job spec. Validate with `jobctl validate {path}`, run with `jobctl train {path}`.
# Every field is optional except `name`; defaults are shown. Docs: docs/spec.md
name: {name}                 # DNS-1123 label: lower-case letters, digits, '-'
seed: 42                     # seeds Python, NumPy and TensorFlow; same spec + seed => same metrics
artifacts_dir: artifacts     # runs/<name>/<run-id>/ and models/<model>/<version>/ go below it

data:
  dataset: digits            # digits | mnist | fashion_mnist | cifar10 | cifar100 | image_folder | npz | tfrecord
  # path: data/dogs          # image_folder root (one sub-folder per class), npz file, a Keras cache dir, or
                             # tfrecord: the directory `jobctl data pack` wrote (local or gs://bucket/dir)
  validation:
    fraction: 0.2            # last 20% of the training data, like Keras validation_split
    # train_size: 40000      # or: first N for training, the rest for validation
    # use_test: true         # or: validate on the test set
  test_fraction: 0.2         # held out when the dataset has no test split (digits, image_folder, npz)
  # resize: [64, 64]         # [height, width]
  color_mode: keep           # keep | grayscale | rgb
  # class_names: [cat, dog]  # rename classes (image_folder: the folder names, listed to fix the label order)
  # max_train_examples: 1000 # cap for quick runs
  split_seed: 0              # seeds the held-out splits (not the training seed)
  cifar100_label_mode: fine  # fine | coarse
  # Streaming (docs/data.md): tfrecord always streams; an image_folder streams from disk when its decoded size
  # (images x height x width x channels bytes) is above in_memory_max_bytes, else it is decoded into memory.
  in_memory_max_bytes: 2000000000  # 0: always stream
  stream_shuffle_buffer: 2048      # decoded images in the shuffle buffer when streaming
  cache: false               # streaming: keep the decoded images in memory after the first epoch
  corrupt_records: error     # streaming: error (exit 2 naming the record or file) | skip (skipped and counted)
  verify_checksums: true     # tfrecord: check each shard's sha256 against dataset.json before training

model:
  type: cnn                  # mlp | cnn | separable_cnn | transfer
  conv_filters: [32, 64]
  kernel_size: 3             # one int, or one per conv layer
  padding: valid             # valid | same
  pooling: max               # max | avg | none
  # pool_after: [1, 3]       # conv indices followed by pooling (default: every conv)
  global_pooling: none       # none (Flatten) | avg | max
  dense_units: [64]
  activation: relu           # relu | tanh | sigmoid | elu | selu | gelu | swish | leaky_relu
  batch_norm: false
  dropout: 0.0               # after each hidden dense layer
  conv_dropout: 0.0          # after the conv stack
  # transfer:                # with type: transfer
  #   base: mobilenet_v2     # vgg16 | mobilenet_v2 | resnet50 | efficientnet_b0
  #   weights: imagenet      # none | imagenet | /path/to/weights.h5
  #   trainable: false       # false: frozen base; true: fine-tune

preprocessing:
  rescale: auto              # auto (divide by the dataset's max pixel), a number like 1/255, or null
  standardize: false         # feature-wise mean/variance adapted on the training data

augmentation:                # training batches only
  flip: none                 # none | horizontal | vertical | horizontal_and_vertical
  rotation: 0.0              # fraction of a full turn
  translation: 0.0
  zoom: 0.0
  contrast: 0.0
  crop_from: null            # [256, 256]: a random data.resize window of the image at this size (the ResNet recipe)
  placement: host            # host: tf.data map on the CPU | device: inside the train step, on the GPU

training:
  optimizer: adam            # adam | sgd | rmsprop | adadelta | adamw
  learning_rate: 0.001
  momentum: 0.0              # sgd, rmsprop
  nesterov: false            # sgd
  schedule:
    type: constant           # constant | cosine | step | plateau
  batch_size: 32
  batch_size_per: global     # global: split across replicas | replica: per device
  scale_learning_rate: false # multiply the learning rate by the number of replicas
  epochs: 10
  label_smoothing: 0.0
  mixed_precision: false
  deterministic: false
  # backup_every_steps: 500  # also back up every N steps: a preempted run resumes mid-epoch (one worker)

callbacks:
  checkpoint: {{monitor: val_accuracy, mode: auto}}  # auto: max for accuracy, min for loss; the best epoch is exported
  early_stopping: {{enabled: false, monitor: val_loss, patience: 3, restore_best_weights: true}}
  tensorboard: {{enabled: true}}
  csv_history: true

export:
  # model_name: {name}       # default: the spec name
  version: increment         # increment | timestamp | an integer
  input_dtype: uint8         # uint8 | float32: raw pixels, preprocessing is inside the model

resources:                   # Kubernetes (jobctl submit)
  gpus: 0                    # per worker
  workers: 1                 # > 1: MultiWorkerMirroredStrategy across pods
  # cpu: "2"                # default 2 cores, 8Gi, 1Gi /dev/shm; with GPUs 8 cores, 16Gi, 2Gi per GPU
  # memory: 8Gi
  # queue: team-a            # a Kueue LocalQueue: Kueue admits the job
  # gpu_type: NVIDIA-H100-80GB-HBM3   # nodeSelector on nvidia.com/gpu.product (resources.gpu_label)
  # priority_class: high     # a PriorityClass: who is preempted first
  node_selector: {{}}
  tolerations: []

distribution:
  strategy: auto             # auto | default | mirrored | multi_worker
  backend: job               # job: an Indexed Job | jobset: a JobSet (restarts every worker together)
"""


def render_template(name: str, path: str) -> str:
    return TEMPLATE.format(name=name, path=path)
