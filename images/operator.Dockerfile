# The operator: only the base dependencies (no torch), non-root.
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
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin operator
USER 10001
EXPOSE 8000 8081
ENTRYPOINT ["ltx-operator"]
