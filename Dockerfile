# Slim runtime image: the `newsletter` command, run as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY newsletter ./newsletter
COPY templates ./templates
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 newsletter \
    && mkdir /data && chown newsletter /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER newsletter
WORKDIR /data
ENV NEWSLETTER_DATABASE_URL=sqlite:////data/newsletter.db \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
ENTRYPOINT ["newsletter"]
CMD ["--help"]
