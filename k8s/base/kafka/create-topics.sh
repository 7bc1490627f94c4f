#!/bin/sh
# Create the pipeline's topics where missing, with the broker's default replication factor.
# Run as an init container of the bridge; the client settings come from KAFKA_CLIENT_* variables.
set -eu
client=/tmp/kafka-client.properties
: > "$client"
if [ -n "${KAFKA_CLIENT_SECURITY_PROTOCOL:-}" ]; then
  {
    echo "security.protocol=${KAFKA_CLIENT_SECURITY_PROTOCOL}"
    echo "sasl.mechanism=SCRAM-SHA-512"
    echo "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"${KAFKA_CLIENT_USER}\" password=\"${KAFKA_CLIENT_PASSWORD}\";"
    echo "ssl.truststore.type=PEM"
    echo "ssl.truststore.location=${KAFKA_CLIENT_CA_FILE}"
  } >> "$client"
fi
for topic in ${KAFKA_TOPICS}; do
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --command-config "$client" \
    --create --if-not-exists --topic "$topic" --partitions "$KAFKA_TOPIC_PARTITIONS"
done
