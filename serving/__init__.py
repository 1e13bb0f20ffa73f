"""Ensembles, a TensorFlow-Serving-compatible model server, its client, and evaluation (docs/serving.md).

    ensemble.py        build_ensemble, resolve_members: K exports -> one averaging SavedModel (TF Serving layout)
    evaluate.py        accuracy and loss of members and ensemble side by side
    model_servers/     `jobctl serve`, laid out as TF Serving's model_servers/:
        server.py              ModelServer: startup, transports, health, reflection, lifecycle
        config.py              ServerConfig, BatchingConfig, ModelServerConfig files
        model_manager.py       versions, labels, polling, warmup
        prediction_service.py  Predict, GetModelMetadata, Classify
        model_service.py       GetModelStatus
        batching.py            server-side batching
        validation.py          request tensors against the signature
        instrumentation.py     status mapping, latency and counts per RPC
        metrics.py             Prometheus metrics
    client.py          PredictClient: jobctl_client's (no TensorFlow) with the contract's names and jobctl's errors
    tensors.py         strict TensorProto <-> numpy
    savedmodel.py      the export layout and signatures
    errors.py          ServingError: TF Serving's status code, in jobs.errors' taxonomy

Import cost: the server, ensemble and evaluate import TensorFlow.
"""
