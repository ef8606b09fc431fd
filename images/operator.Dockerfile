# The operator: only the base dependencies (no torch), non-root, any UID.
# docker build -f images/operator.Dockerfile -t ltx-extend-operator .
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract contract
COPY trainer trainer
COPY operator operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11.7-slim-bookworm
COPY --from=build /install /usr/local
# Group 0, as OpenShift's arbitrary UIDs run; nothing is written to the image at run
# time (the root filesystem is read-only; /tmp is a volume).
RUN useradd --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin operator
ENV HOME=/tmp
USER 10001
EXPOSE 8000 8081
ENTRYPOINT ["ltx-operator"]
