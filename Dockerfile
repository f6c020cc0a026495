# syntax=docker/dockerfile:1
# The phenoprint HTTP service (`phenoprint serve`), in a CPU or a GPU image:
#
#   docker build -t phenoprint:cpu .                              # python:3.11-slim, CPU-only torch
#   docker build -t phenoprint:gpu --build-arg VARIANT=gpu .      # CUDA 12.4 runtime, CUDA torch, faiss-gpu
#
#   docker run --rm -p 127.0.0.1:8000:8000 \
#     -v "$PWD/runs/demo:/models/run:ro" -v "$PWD/indexes:/indexes:ro" phenoprint:cpu
#   docker run --rm --gpus all -p 127.0.0.1:8000:8000 -e PHENOPRINT_API_KEY=… \
#     -v "$PWD/runs/demo:/models/run:ro" -v "$PWD/indexes:/indexes:ro" phenoprint:gpu
#
# Needs BuildKit (the default builder since Docker 23.0), which builds only the stages the chosen VARIANT uses.
# Settings are PHENOPRINT_* environment variables (see `phenoprint serve --help`); indexes written into the
# mounted folder by scripts/build_index.py are picked up without a restart.

ARG VARIANT=cpu

# -- bases: the same one builds and runs, so the virtual environment's interpreter path stays valid -----------------
FROM python:3.11-slim AS base-cpu

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS base-gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python

# -- torch per variant ------------------------------------------------------------------------------------------------
FROM base-cpu AS torch-cpu
# PyPI's Linux torch wheels carry the CUDA libraries (gigabytes): the CPU image takes the CPU-only build first, and
# `pip install .` below then finds torch already satisfied.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu

FROM base-gpu AS torch-gpu
RUN python -m venv /opt/venv

# -- build: the package installed the README way (`pip install .`, `.[gpu]` for the GPU image) ---------------------
FROM torch-${VARIANT} AS build
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY phenoprint ./phenoprint
RUN if [ "$VARIANT" = gpu ]; then pip install ".[gpu]"; else pip install .; fi
# faiss-cpu (a base dependency) and faiss-gpu-cu12 (the gpu extra) install the same `faiss` module: keep the GPU one.
RUN if [ "$VARIANT" = gpu ]; then pip uninstall -y faiss-cpu && pip install --force-reinstall --no-deps faiss-gpu-cu12; fi

# -- runtime: the environment, a non-root user, nothing else --------------------------------------------------------
FROM base-${VARIANT} AS runtime
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --create-home --home-dir /home/phenoprint phenoprint
USER phenoprint
WORKDIR /home/phenoprint
# Inside a container the loopback interface cannot be reached from a published port, so the service binds all of
# the container's interfaces; what is exposed on the host is decided by `docker run -p` (127.0.0.1:8000:8000 keeps it
# local). Set PHENOPRINT_API_KEY whenever the port is reachable by others.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PHENOPRINT_HOST=0.0.0.0 \
    PHENOPRINT_PORT=8000 \
    PHENOPRINT_MODEL=/models/run \
    PHENOPRINT_INDEXES=/indexes
EXPOSE 8000
# curl is not in these images; the venv's python is. /healthz answers as soon as the process serves (loading the
# model happens before that, hence the start period); /readyz says when indexes are loaded.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PHENOPRINT_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["phenoprint", "serve"]
