#!/bin/sh
# Start one pod of the Kafka StatefulSet: write its server.properties (node.id from the pod ordinal,
# advertised listener from the pod name), format the storage once, then run the broker.
set -eu
config=/var/run/kafka/server.properties
{
  cat /etc/kafka/iotpipe/server.properties
  echo "node.id=${HOSTNAME##*-}"
  echo "advertised.listeners=${KAFKA_ADVERTISED_LISTENERS}"
  if [ -n "${KAFKA_SCRAM_ADMIN_PASSWORD:-}" ]; then
    echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"${KAFKA_SCRAM_ADMIN_USER}\" password=\"${KAFKA_SCRAM_ADMIN_PASSWORD}\";"
  fi
  if [ -n "${KAFKA_TLS_PASSWORD:-}" ]; then
    echo "ssl.keystore.password=${KAFKA_TLS_PASSWORD}"
    echo "ssl.truststore.password=${KAFKA_TLS_PASSWORD}"
  fi
} > "$config"
set -- format --cluster-id "$KAFKA_CLUSTER_ID" --config "$config" --ignore-formatted
if [ -n "${KAFKA_SCRAM_ADMIN_PASSWORD:-}" ]; then
  # SCRAM users of a KRaft cluster are created with the storage, before any broker can authenticate.
  set -- "$@" \
    --add-scram "SCRAM-SHA-512=[name=${KAFKA_SCRAM_ADMIN_USER},password=${KAFKA_SCRAM_ADMIN_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=${KAFKA_SCRAM_CLIENT_USER},password=${KAFKA_SCRAM_CLIENT_PASSWORD}]"
fi
/opt/kafka/bin/kafka-storage.sh "$@"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
