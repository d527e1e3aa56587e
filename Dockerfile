# The `kyufu` binary in a small image: every role runs from it (`kyufu gateway`, `kyufu intake`,
# `kyufu worker <stage>`, `kyufu review`, ...). Built by `make deploy-up` through deploy/compose.yaml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p kyufu -j2 && strip target/release/kyufu

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/kyufu kyufu \
    && mkdir -p /var/lib/kyufu && chown kyufu /var/lib/kyufu
COPY --from=build /src/target/release/kyufu /usr/local/bin/kyufu
USER 10001:10001
WORKDIR /var/lib/kyufu
ENTRYPOINT ["kyufu"]
CMD ["--help"]
