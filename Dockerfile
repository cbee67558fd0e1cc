# Build a release ringlogd on Debian bookworm, run it on a slim bookworm image.
# (Finished by the operations issue: non-root user, seccomp profile, health check.)
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends liburing-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN swift build -c release --product ringlogd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends liburing2 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/.build/release/ringlogd /usr/local/bin/ringlogd
VOLUME /data
EXPOSE 7400
ENTRYPOINT ["/usr/local/bin/ringlogd", "--data-dir", "/data", "--listen", "0.0.0.0:7400"]
