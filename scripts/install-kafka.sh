#!/usr/bin/env bash
# Fetches the Apache Kafka broker (org.apache.kafka:kafka_2.13, pinned below) with its runtime
# dependencies from Maven Central into a cache directory, for the real KRaft brokers the tests start
# (crates/kyufu-testservers/src/kafka.rs). Called by scripts/install-deps.sh; needs only java and
# mvn. Idempotent and quiet: a cache that is complete (marked by `.complete`, written last) is left
# alone; a half-fetched one is fetched again.
#
# The jars are the broker's own dependency tree plus one binding, log4j-slf4j-impl: Kafka logs
# through SLF4J 1.7, and without a binding SLF4J would drop every line the broker writes. The test
# harness points log4j at a file in each broker's temporary directory.
#
# Then a class-data sharing archive of the broker's classes (`libs.jsa` beside `libs/`): a broker
# started with it maps its classes from one file instead of loading thousands of classes from jars,
# which halves its start-up CPU. The JVM writes the archive when a broker it ran stops normally, so
# this starts one broker on loopback ports for a few seconds, once. The archive belongs to one JVM
# build; after a Java update it no longer maps, and the next run makes it again (until then brokers
# start without it, only slower).
#
#   KAFKA_LIBS   where the jars go (default ~/.cache/kyufu/kafka-$KAFKA_VERSION/libs; the harness
#                reads the same variable, so both agree on the place)
set -euo pipefail

# The broker version; crates/kyufu-testservers/src/kafka.rs names the same (a unit test there checks).
KAFKA_VERSION=4.4.0
# The log4j version kafka_2.13 4.4.0 depends on, so the binding matches log4j-core.
LOG4J_VERSION=2.25.5

LIBS=${KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/kyufu/kafka-$KAFKA_VERSION/libs}
# The harness looks for the archive at the same place.
ARCHIVE="$LIBS.jsa"

for cmd in java mvn; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "install-kafka: $cmd is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

usable_archive() {
  [[ -f "$ARCHIVE" ]] && java -Xshare:on "-XX:SharedArchiveFile=$ARCHIVE" -cp "$LIBS/*" -version >/dev/null 2>&1
}
[[ -f "$LIBS/.complete" ]] && usable_archive && exit 0

work=$(mktemp -d "${TMPDIR:-/tmp}/kyufu-kafka-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

fetch() {
  echo "install-kafka: fetching Apache Kafka $KAFKA_VERSION (kafka_2.13 and its runtime jars) from Maven Central into $LIBS"
  # A throwaway project whose only purpose is its dependency list.
  printf '%s\n' \
    '<project xmlns="http://maven.apache.org/POM/4.0.0">' \
    '  <modelVersion>4.0.0</modelVersion>' \
    '  <groupId>kyufu.testservers</groupId>' \
    '  <artifactId>kafka-broker-jars</artifactId>' \
    '  <version>1</version>' \
    '  <packaging>pom</packaging>' \
    '  <dependencies>' \
    "    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>" \
    "    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>" \
    '  </dependencies>' \
    '</project>' >"$work/pom.xml"
  if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
    cat "$work/mvn.log" >&2
    echo "install-kafka: Maven could not fetch kafka_2.13 $KAFKA_VERSION (see above)" >&2
    exit 1
  fi
  # What the harness needs to start a broker that logs: the broker and its storage tool (one jar),
  # the client library, log4j with its SLF4J binding.
  local jar
  for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar" "log4j-core-$LOG4J_VERSION.jar" "log4j-slf4j-impl-$LOG4J_VERSION.jar" "slf4j-api-"; do
    compgen -G "$work/libs/$jar*" >/dev/null || { echo "install-kafka: $jar missing from what Maven fetched" >&2; exit 1; }
  done
  rm -rf "$LIBS" "$ARCHIVE"
  mkdir -p "$(dirname "$LIBS")"
  mv "$work/libs" "$LIBS"
  touch "$LIBS/.complete"
  echo "install-kafka: $(find "$LIBS" -name '*.jar' | wc -l) jars in $LIBS"
}

# A loopback port nothing listens on (bash only: the machine may have nothing else to ask).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

archive() {
  echo "install-kafka: making the class-data sharing archive $ARCHIVE (one broker start, once)"
  local dir="$work/broker" port cport pid
  mkdir -p "$dir"
  port=$(free_port)
  cport=$(free_port)
  printf '%s\n' \
    'process.roles=broker,controller' \
    'node.id=0' \
    "controller.quorum.voters=0@127.0.0.1:$cport" \
    "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport" \
    'controller.listener.names=CONTROLLER' \
    "log.dirs=$dir/data" \
    'offsets.topic.replication.factor=1' >"$dir/server.properties"
  printf '%s\n' \
    'rootLogger.level=INFO' \
    'rootLogger.appenderRef.file.ref=file' \
    'appender.file.type=File' \
    'appender.file.name=file' \
    "appender.file.fileName=$dir/server.log" \
    'appender.file.layout.type=PatternLayout' \
    'appender.file.layout.pattern=%m%n' >"$dir/log4j2.properties"
  local java=(java -XX:+UseSerialGC "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$LIBS/*")
  if ! "${java[@]}" kafka.tools.StorageTool format --cluster-id AAAAAAAAAAAAAAAAAAAAAA --config "$dir/server.properties" >"$dir/out" 2>&1; then
    cat "$dir/out" >&2
    echo "install-kafka: formatting a broker's storage failed" >&2
    exit 1
  fi
  "${java[@]}" "-XX:ArchiveClassesAtExit=$ARCHIVE" kafka.Kafka "$dir/server.properties" >>"$dir/out" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do
    grep -q 'Kafka Server started' "$dir/server.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  # A normal stop writes the archive; a broker that never started leaves none.
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  if ! usable_archive; then
    rm -f "$ARCHIVE"
    tail -n 20 "$dir/out" "$dir/server.log" >&2 || true
    echo "install-kafka: no usable class-data archive; brokers start without it (slower)" >&2
  fi
}

[[ -f "$LIBS/.complete" ]] || fetch
usable_archive || archive
