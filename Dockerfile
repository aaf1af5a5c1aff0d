# Slim runtime image: the `newsletter` command, run as an unprivileged user.
# BASE_IMAGE needs python3 (3.11+) with venv, CA certificates and tzdata; scripts/container_base.sh
# bootstraps such a base from Debian's packages where a registry's python image cannot be pulled.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# A virtual environment under /opt is the same path with the same interpreter on either base, so
# the final stage copies it whole; build tools and pip's caches stay behind in this stage.
RUN python3 -m venv /opt/newsletter
WORKDIR /src
# Dependencies first, read from pyproject.toml itself, so a source change reuses their layer.
# A build secret `pip-cert` (a CA bundle) is used where an egress proxy re-signs TLS.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["postgres"]))' > requirements.txt \
    && /opt/newsletter/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY README.md ./
COPY newsletter ./newsletter
COPY templates ./templates
COPY config ./config
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    /opt/newsletter/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/newsletter/bin/pip uninstall --yes --quiet pip setuptools \
    && find /opt/newsletter -name __pycache__ -prune -exec rm -rf {} + \
    && /opt/newsletter/bin/python -m compileall -q -j 0 /opt/newsletter/lib

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 10001 newsletter \
    && mkdir /data && chown newsletter /data
COPY --from=build /opt/newsletter /opt/newsletter
USER newsletter
WORKDIR /data
ENV PATH=/opt/newsletter/bin:$PATH \
    NEWSLETTER_DATABASE_URL=sqlite:////data/newsletter.db \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
ENTRYPOINT ["newsletter"]
CMD ["--help"]
