FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY datasets_app datasets_app
COPY annotation annotation
COPY training training
COPY workers workers
COPY templates templates
COPY static static
COPY manage.py ./
# GPU images: install a CUDA build of torch 2.13 here instead, and the [gpu] extra.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install "torch==2.13.0" --index-url ${TORCH_INDEX} && pip install ".[s3]"
EXPOSE 8000
