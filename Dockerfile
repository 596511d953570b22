# The mlstack application image for docker-compose: gateway (auth_api), BentoML task service and Locust.
# Triton itself runs the stock NGC image. Build: `docker compose build` (tag mlstack:0.1.0, the pyproject version).
FROM python:3.11.9-slim-bookworm
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
COPY pyproject.toml constraints.txt README.md ./
COPY mlstack mlstack
COPY training training
COPY services services
COPY auth_api auth_api
COPY apps apps
COPY loadtests loadtests
COPY monitoring monitoring
RUN pip install -c constraints.txt ".[serve,load]" && useradd --uid 1000 --create-home mlstack
USER mlstack
