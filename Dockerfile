# agentflow and its mock agents, built in one stage and shipped in a slim one.
#   docker build -t agentflow .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka (bundled): it needs a C toolchain
# (in the image) and nothing else.
COPY . .
RUN cargo build --release --locked --bin agentflow --bin agentflow-mock-agent

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/agentflow /src/target/release/agentflow-mock-agent /usr/local/bin/
COPY config /etc/agentflow/config
WORKDIR /etc/agentflow
ENV AGENTFLOW_HTTP_ADDR=0.0.0.0:8080 \
    AGENTFLOW_AGENTS_FILE=/etc/agentflow/config/agents.toml \
    AGENTFLOW_LOG_FORMAT=json
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["agentflow"]
CMD ["serve"]
