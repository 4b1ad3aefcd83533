# The mailbridge image: one binary, one subcommand per part (edge, worker, web,
# migrate, tenant, device). Build with `docker build -t mailbridge .`; the Helm chart
# in helm/mailbridge runs it.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Without the `dev` feature: no `mailbridge dev`/`sim`, so the image never links the
# Microsoft 365 simulator or the throwaway PostgreSQL.
RUN cargo build --release --locked -p mailbridge --no-default-features

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mailbridge \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin mailbridge
COPY --from=builder /src/target/release/mailbridge /usr/local/bin/mailbridge
# Unprivileged ports only: a non-root process cannot bind 25, 465 or 587. The Helm
# chart's Service maps the standard ports to these and sets the same variables (and
# turns the port 25 relay listener, 2525 inside, on when asked to).
ENV MAILBRIDGE_SUBMISSION_LISTEN=0.0.0.0:2587 \
    MAILBRIDGE_SUBMISSIONS_LISTEN=0.0.0.0:4465 \
    MAILBRIDGE_RELAY_LISTEN=off \
    MAILBRIDGE_METRICS_LISTEN=0.0.0.0:9090 \
    MAILBRIDGE_WEB_LISTEN=0.0.0.0:8080 \
    MAILBRIDGE_LOG_FORMAT=json
USER 10001:10001
EXPOSE 2587 4465 8080 9090
ENTRYPOINT ["/usr/local/bin/mailbridge"]
CMD ["--help"]
