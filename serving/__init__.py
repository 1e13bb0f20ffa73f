"""Ensembles, a TensorFlow-Serving-compatible gRPC server, its client, and Kubernetes deployment (docs/serving.md).

    ensemble.py    build_ensemble, resolve_members: K exports -> one averaging SavedModel (TF Serving layout)
    evaluate.py    accuracy and loss of members and ensemble side by side
    server.py      ModelServer: PredictionService, ModelService, health, reflection, batching, version watching
    client.py      PredictClient: Predict / metadata / status with retries, deadlines, TLS, batching of inputs
    tensors.py     strict TensorProto <-> numpy
    savedmodel.py  the export layout and signatures
    deploy.py      Deployment/Service/HPA builders for the stock tensorflow/serving image, applied via the API

Import cost: server, ensemble and client import TensorFlow (the TF Serving protos pull it in); deploy does not.
"""
