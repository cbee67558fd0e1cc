# ringlogd in a container. Build:  docker build -t ringlog .
# Run (io_uring needs the shipped seccomp profile; Docker's default one blocks it):
#   docker run -d --name ringlog --security-opt seccomp=Scripts/seccomp-ringlogd.json \
#     -p 127.0.0.1:7400:7400 -v ringlog-data:/data ringlog
# See docs/operations.md. (Not built in this project's CI: no Docker engine there.)

# Build: Swift 6 on Debian bookworm, the Swift runtime linked statically.
FROM swift:6.3-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends liburing-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product ringlogd \
    && swift build -c release --static-swift-stdlib --product ringlog \
    && mkdir /out && cp .build/release/ringlogd .build/release/ringlog /out/

# Run: a slim bookworm with liburing, as a non-root user, data in /data.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends liburing2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin ringlog \
    && mkdir /data && chown ringlog:ringlog /data
COPY --from=build /out/ringlogd /out/ringlog /usr/local/bin/
USER ringlog
VOLUME /data
EXPOSE 7400 9092 9400
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["ringlog", "--server", "127.0.0.1:7400", "ping"]
# Kafka clients are told to connect to --kafka-advertise: 127.0.0.1:9092 suits `docker run -p
# 127.0.0.1:9092:9092`; pass another (e.g. `--kafka-advertise kafka.example:9092`) after the image.
ENTRYPOINT ["ringlogd", "--data-dir", "/data", "--listen", "0.0.0.0:7400", "--metrics-listen", "0.0.0.0:9400", "--kafka-listen", "0.0.0.0:9092", "--kafka-advertise", "127.0.0.1:9092"]
