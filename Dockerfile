# A static musl binary on a distroless base: no shell, no package manager, non-root.
# The same build step runs in CI (.ci/run) to prove it without a Docker engine.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p autohealer \
 && cp target/x86_64-unknown-linux-musl/release/autohealer /autohealer

# distroless/static carries CA certificates and a nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /autohealer /usr/local/bin/autohealer
USER 65532:65532
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/autohealer"]
CMD ["run", "--config", "/etc/autohealer/config/config.yaml", "--log-format", "json"]
