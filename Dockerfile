# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with the server extra, install it into a slim image
# that runs as an unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY agent ./agent
COPY migrations ./migrations
RUN python -m build --wheel --outdir /wheels \
 && pip wheel --no-cache-dir --wheel-dir /wheels "$(ls /wheels/*.whl)[server]"

FROM python:3.11-slim
RUN groupadd --system ctops && useradd --system --gid ctops --home-dir /app --create-home ctops
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "ctops-certificates[server]" \
 && rm -rf /wheels
USER ctops
ENV CTOPS_DATA_DIR=/app/data PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["ctops", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
