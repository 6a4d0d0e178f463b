# The fraudstream image: the worker, the simulator and the tools behind one
# entrypoint. `docker run IMAGE worker`, `docker run IMAGE simulate --kafka`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from the project metadata alone, so a change of the
# code does not reinstall TensorFlow and the rest: empty packages stand in
# for the code during this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p features models stream deploy \
    && touch features/__init__.py models/__init__.py stream/__init__.py deploy/__init__.py \
    && pip install . \
    && pip uninstall -y fraudstream \
    && rm -rf features models stream deploy build *.egg-info

COPY features ./features
COPY models ./models
COPY stream ./stream
COPY deploy ./deploy
RUN pip install --no-deps . && rm -rf build *.egg-info

# An unprivileged user owns the data directory (store, models, Faust state).
RUN useradd --create-home --uid 10001 fraudstream \
    && mkdir -p /data \
    && chown fraudstream:fraudstream /data
USER fraudstream
ENV FRAUDSTREAM_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 9108

ENTRYPOINT ["fraudstream"]
CMD ["worker"]
