# vae-serve images: the serving side only (no torch), running as a non-root user.
#
#   docker build --target cpu -t vae-serve:cpu .     # onnxruntime (CPU)
#   docker build --target gpu -t vae-serve:gpu .     # onnxruntime-gpu, CUDA 13 and cuDNN 9 from pip:
#                                                    # the host needs NVIDIA driver >= 580 and the
#                                                    # NVIDIA container toolkit (docker run --gpus all)
#
# The bundle in models/digits (what scripts/start.sh trains) is baked in at /models/digits; pick
# another with --build-arg BUNDLE=path/to/bundle, or mount a model repository at run time:
#   docker run -v $PWD/repo:/repo:ro -e VAE_BUNDLE= -e VAE_MODEL_REPOSITORY=/repo vae-serve:cpu
# Every setting is a VAE_* environment variable (see the README).
#
# Offline builds: Python packages come from wheelhouse/ when it holds wheels and PIP_NO_INDEX=1 is
# passed as a build argument (scripts/container_smoke.sh does this); otherwise from the index.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build-base
ARG PIP_NO_INDEX=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=/wheels
WORKDIR /src
COPY wheelhouse/ /wheels/
COPY pyproject.toml README.md ./
COPY api/ api/
COPY core/ core/
COPY service/ service/
COPY client/ client/
# The export modules install with the package (they import torch only when training runs, which
# the image never does: torch is not installed).
COPY export/ export/
RUN python3 -m venv /opt/vae

FROM build-base AS build-cpu
RUN /opt/vae/bin/pip install .

FROM ${BASE_IMAGE} AS runtime-base
ARG BUNDLE=models/digits
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent vae
COPY --chown=root:root ${BUNDLE} /models/digits
ENV PATH=/opt/vae/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VAE_BUNDLE=/models/digits \
    VAE_HOST=0.0.0.0 \
    VAE_PORT=50051 \
    VAE_METRICS_PORT=9090 \
    VAE_HTTP_PORT=8000 \
    VAE_GRACE_S=30
EXPOSE 50051 8000 9090
USER 10001:10001
# The gRPC health protocol, as Kubernetes' native probes use it: SERVING only after every bundle
# passed verification, NOT_SERVING from the first moment of a drain.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["vae-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["vae-serve"]

FROM runtime-base AS cpu
COPY --from=build-cpu /opt/vae /opt/vae
ENV VAE_DEVICE=cpu

# GPU stages after the CPU ones: Docker's legacy builder (no BuildKit) builds every stage up to the
# --target, so `--target cpu` never needs the onnxruntime-gpu wheels.
FROM build-base AS build-gpu
# onnxruntime-gpu replaces onnxruntime (both own the `onnxruntime` module); its cuda and cudnn
# extras bring the CUDA 13 runtime libraries, so the base image stays plain Debian.
RUN /opt/vae/bin/pip install . \
    && /opt/vae/bin/pip uninstall -y onnxruntime \
    && /opt/vae/bin/pip install "onnxruntime-gpu[cuda,cudnn]==1.31.1"

FROM runtime-base AS gpu
COPY --from=build-gpu /opt/vae /opt/vae
ENV VAE_DEVICE=cuda

# Last: a plain `docker build .` makes the CPU image.
FROM cpu AS default
