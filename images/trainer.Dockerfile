# The trainer: Python, torch built for CUDA 12.8 (its wheels carry the CUDA libraries;
# the node provides the driver), the locked `trainer` dependencies (PyAV's wheels carry
# the ffmpeg libraries), non-root. Runs `ltx-extend job prepare|train`.
# docker build -f images/trainer.Dockerfile -t ltx-extend-trainer .
FROM python:3.11.7-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# torch first, from the CUDA index, pinned as in pyproject's trainer extra
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
WORKDIR /src
# every other package at the version in the lock (the versions the test suite ran on)
COPY requirements/trainer.lock requirements/
RUN pip install --no-deps -r requirements/trainer.lock
COPY pyproject.toml README.md ./
COPY contract contract
COPY trainer trainer
COPY operator operator
# the project itself (its dependencies are in place from the lock; `pip check` proves they
# fit what pyproject asks)
# hadolint ignore=DL3013
RUN pip install --no-deps . && pip check \
 && useradd --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin trainer
# Any UID works (OpenShift): the trainer writes only under its work volume, never HOME.
USER 10001
WORKDIR /work
EXPOSE 8080
ENTRYPOINT ["ltx-extend"]
