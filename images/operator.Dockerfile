# The operator: its locked dependencies (no torch) and two packages, the contract and the
# operator — no trainer code. Non-root, any UID.
# docker build -f images/operator.Dockerfile -t ltx-extend-operator .
FROM python:3.11.7-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/app
COPY requirements/operator.lock /tmp/operator.lock
RUN pip install --no-deps -r /tmp/operator.lock && pip check && rm /tmp/operator.lock
COPY contract/ltx_contract /app/ltx_contract
COPY operator/ltx_operator /app/ltx_operator
# Group 0, as OpenShift's arbitrary UIDs run; nothing is written to the image at run
# time (the root filesystem is read-only; /tmp is a volume).
RUN useradd --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin operator
ENV HOME=/tmp
USER 10001
EXPOSE 8000 8081
ENTRYPOINT ["python", "-m", "ltx_operator.main"]
