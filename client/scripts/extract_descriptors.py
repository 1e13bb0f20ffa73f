"""Writes client/protos/descriptor_set.textproto: the schemas jobctl_client's stubs are compiled from.

The source of truth is the schema TensorFlow Serving's own Python package was built from: every generated `_pb2`
module carries its .proto file's FileDescriptorProto, so the pinned `tensorflow-serving-api` and `tensorflow` wheels
give the exact messages and services of that release (comments are not part of a descriptor). Run it where both are
installed (the project venv); the services' import closure is written in dependency order, as text, so a version
bump shows up as a reviewable diff:

    python client/scripts/extract_descriptors.py            # rewrites client/protos/descriptor_set.textproto
    python client/scripts/extract_descriptors.py --check    # exit 1 if the vendored set differs from the wheels
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
OUT = HERE / "protos" / "descriptor_set.textproto"
# The services a client calls; everything they import comes along.
SERVICES = ("tensorflow_serving.apis.prediction_service_pb2", "tensorflow_serving.apis.model_service_pb2")
SOURCES = ("tensorflow-serving-api", "tensorflow")


def closure():
    """The FileDescriptorProtos of SERVICES and their imports, each after the files it imports."""
    import importlib

    from google.protobuf import descriptor_pb2

    seen: set[str] = set()
    ordered = []

    def visit(fd):
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        ordered.append(proto)

    for module in SERVICES:
        visit(importlib.import_module(module).DESCRIPTOR)
    return ordered


def render() -> str:
    from google.protobuf import descriptor_pb2, text_format

    versions = ", ".join(f"{d}=={metadata.version(d)}" for d in SOURCES)
    files = descriptor_pb2.FileDescriptorSet(file=closure())
    header = (f"# proto-file: google/protobuf/descriptor.proto\n# proto-message: FileDescriptorSet\n"
              f"# Extracted from {versions} by client/scripts/extract_descriptors.py; do not edit by hand.\n")
    return header + text_format.MessageToString(files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the vendored file instead of writing it")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    text = render()
    if args.check:
        same = OUT.is_file() and OUT.read_text() == text
        print(f"{OUT}: {'matches' if same else 'DIFFERS from'} the installed wheels", file=sys.stderr)
        return 0 if same else 1
    tmp = OUT.with_name(OUT.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(OUT)
    print(f"wrote {OUT} ({text.count(chr(10))} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
