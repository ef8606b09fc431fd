# The trainer: CUDA runtime, torch built for it, the `trainer` extra (PyAV wheels carry
# the ffmpeg libraries), non-root. Runs `ltx-extend job prepare|train`.
# docker build -f images/trainer.Dockerfile -t ltx-extend-trainer .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# The base image is pinned; its distribution's python3 is the one it was built with.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
# torch first, from the CUDA index, pinned as in pyproject's trainer extra
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract contract
COPY trainer trainer
COPY operator operator
# the project itself: its dependencies are pinned by pyproject.toml
# hadolint ignore=DL3013
RUN pip install '.[trainer]' \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin trainer
USER 10001
WORKDIR /home/trainer
EXPOSE 8080
ENTRYPOINT ["ltx-extend"]
