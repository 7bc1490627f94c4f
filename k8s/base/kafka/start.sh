#!/bin/sh
# Start one pod of the Kafka StatefulSet: write its server.properties (node.id from the pod ordinal,
# advertised listener from the pod name, with SASL the admin user as a super user, its login between
# brokers and the key store passwords), format the storage once, then run the broker.
set -eu
template=/etc/kafka/iotpipe/server.properties
config=/var/run/kafka/server.properties
{
  grep -v '^super\.users=' "$template"
  echo "node.id=${HOSTNAME##*-}"
  echo "advertised.listeners=${KAFKA_ADVERTISED_LISTENERS}"
  if [ -n "${KAFKA_SCRAM_ADMIN_PASSWORD:-}" ]; then
    # The certificate's principal (the controllers) from the template, and the admin (the brokers).
    certificate_users=$(sed -n 's/^super\.users=//p' "$template")
    echo "super.users=${certificate_users:+${certificate_users};}User:${KAFKA_SCRAM_ADMIN_USER}"
    echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"${KAFKA_SCRAM_ADMIN_USER}\" password=\"${KAFKA_SCRAM_ADMIN_PASSWORD}\";"
  fi
  if [ -n "${KAFKA_TLS_PASSWORD:-}" ]; then
    echo "ssl.keystore.password=${KAFKA_TLS_PASSWORD}"
    echo "ssl.truststore.password=${KAFKA_TLS_PASSWORD}"
  fi
} > "$config"
set -- format --cluster-id "$KAFKA_CLUSTER_ID" --config "$config" --ignore-formatted
if [ -n "${KAFKA_SCRAM_ADMIN_PASSWORD:-}" ]; then
  # The brokers' own SCRAM user exists with the storage, before any broker can authenticate; the
  # pipeline's users are created by setup.sh through the running cluster.
  set -- "$@" --add-scram "SCRAM-SHA-512=[name=${KAFKA_SCRAM_ADMIN_USER},password=${KAFKA_SCRAM_ADMIN_PASSWORD}]"
fi
/opt/kafka/bin/kafka-storage.sh "$@"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
