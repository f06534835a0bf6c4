# crisiswatch worker and connectors image.
#   docker build -t crisiswatch .
#   docker run --rm crisiswatch rules check /app/brands
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rules ./rules
COPY streams ./streams
COPY connectors ./connectors
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CRISISWATCH_RULES_DIR=/app/brands \
    CRISISWATCH_DATA_DIR=/var/lib/crisiswatch/worker \
    CRISISWATCH_WEB_HOST=0.0.0.0 \
    CRISISWATCH_WEB_PORT=6066
RUN groupadd --system --gid 10001 crisiswatch \
    && useradd --system --uid 10001 --gid crisiswatch --home-dir /var/lib/crisiswatch \
       --shell /usr/sbin/nologin crisiswatch \
    && mkdir -p /app/brands /var/lib/crisiswatch/worker \
    && chown -R crisiswatch:crisiswatch /var/lib/crisiswatch
COPY --from=build /opt/venv /opt/venv
COPY brands /app/brands
WORKDIR /app
USER crisiswatch:crisiswatch
EXPOSE 6066 9464 8088
# The worker answers /healthz on its web port; compose overrides this check for
# the connectors service, which serves /metrics on 9464 instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CRISISWATCH_WEB_PORT', '6066'), timeout=3)"
ENTRYPOINT ["crisiswatch"]
CMD ["worker"]
