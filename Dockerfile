# The training image: `python -m jobs.train --spec FILE` on the official TensorFlow GPU image.
# Build and push (needs Docker):  make image IMAGE=<registry>/<repo> TAG=<version>
# TF_VERSION must equal the tensorflow pin in pyproject.toml (tests/test_dockerfile.py checks it).
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

LABEL org.opencontainers.image.title="jobctl-train" \
      org.opencontainers.image.description="jobctl training job: python -m jobs.train --spec FILE" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    HOME=/tmp \
    KERAS_HOME=/cache/keras \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# Dependencies first (a layer that changes only with pyproject.toml). The pins come from pyproject.toml, the
# single source of truth. Left out: tensorflow (the base image's CUDA build must not be replaced) and the
# CLI-only packages (kubernetes client, typer, rich, gRPC health/reflection, jobctl's own client) that a training
# pod never imports.
COPY pyproject.toml /app/pyproject.toml
RUN python3 -c "import tomllib; deps = tomllib.load(open('/app/pyproject.toml', 'rb'))['project']['dependencies']; skip = ('tensorflow==', 'kubernetes', 'typer', 'rich', 'grpcio-health-checking', 'grpcio-reflection', 'jobctl-client'); print('\n'.join(d for d in deps if not d.startswith(skip)))" > /tmp/requirements.txt \
 && python3 -m pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# A numeric non-root user (runAsNonRoot can only verify numeric ids); the code stays owned by root, read-only.
RUN groupadd --gid 10001 jobctl \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin jobctl

# Only what the job imports: the jobs package, and the TensorFlow-free TF_CONFIG helper it uses.
COPY jobs/ /app/jobs/

USER 10001:10001

# Kubernetes Jobs have no use for a Docker health check; say so rather than leave it undefined.
HEALTHCHECK NONE

ENTRYPOINT ["python3", "-m", "jobs.train"]
