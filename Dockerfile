# SBA's image: one image for the API (`sba serve`, the default), the workers (`worker`) and
# migrations (`db upgrade`). Build: docker build -t sba .   Run: docker run -p 8000:8000 sba
# The entry point is `sba`, so the arguments are a subcommand: docker run sba worker

ARG PYTHON_VERSION=3.11

# --- build: compilers and pip live here only -------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# For the rare dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/sba
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# pip compiles every module as it installs: the runtime, on a read-only filesystem, writes none.
RUN /opt/sba/bin/pip install . && /opt/sba/bin/pip uninstall -y pip

# --- runtime: the interpreter, the virtual environment, nothing to build with -------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

# A fixed numeric id, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 sba \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/sba \
        --shell /usr/sbin/nologin sba \
    && mkdir -p /var/lib/sba/artifacts /var/lib/sba/keys \
    && chown -R 10001:10001 /var/lib/sba

COPY --from=build /opt/sba /opt/sba

ENV PATH=/opt/sba/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SBA_DATA_DIR=/var/lib/sba \
    SBA_HTTP__PORT=8000

USER 10001:10001
WORKDIR /var/lib/sba
EXPOSE 8000

# Liveness of the API on its own port; worker containers set a check of their own (compose) or
# probes (Kubernetes), as Kubernetes ignores this one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SBA_HTTP__PORT', '8000') + '/healthz', timeout=2)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["sba"]
CMD ["serve", "--host", "0.0.0.0"]
