#!/bin/sh
# The pipeline's topics and, with SASL, its users and their ACLs, made through this pod's broker where
# missing; then the container idles. Run by the kafka-setup container of every broker pod at each start
# (every step is idempotent); the pod is ready once $KAFKA_SETUP_DONE exists.
set -eu
# As PID 1 the shell must handle SIGTERM itself, or the pod waits out its grace period.
trap 'exit 0' TERM INT
bin=/opt/kafka/bin
client=/tmp/kafka-setup/admin.properties
mkdir -p "$(dirname "$client")" "$(dirname "$KAFKA_SETUP_DONE")"
rm -f "$KAFKA_SETUP_DONE"
: > "$client"
if [ -n "${KAFKA_ADMIN_PASSWORD:-}" ]; then
  {
    echo "security.protocol=SASL_SSL"
    echo "sasl.mechanism=SCRAM-SHA-512"
    echo "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"${KAFKA_ADMIN_USER}\" password=\"${KAFKA_ADMIN_PASSWORD}\";"
    echo "ssl.truststore.type=PEM"
    echo "ssl.truststore.location=${KAFKA_CA_FILE}"
  } >> "$client"
fi

# Each step is retried until the cluster takes it: a topic of replication factor 3 needs three brokers.
retry() {
  until "$@" > /tmp/kafka-setup/last.log 2>&1; do
    echo "kafka-setup: waiting for the cluster to take: $*" >&2
    tail -n 3 /tmp/kafka-setup/last.log >&2
    sleep 5
  done
}

topic() {  # topic NAME [--config KEY=VALUE]
  name=$1
  shift
  retry "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_SETUP_BOOTSTRAP" --command-config "$client" \
    --create --if-not-exists --topic "$name" --partitions "$KAFKA_TOPIC_PARTITIONS" "$@"
}

user() {  # user NAME PASSWORD: a SCRAM user (its password set again at each start: a rotated Secret applies)
  name=$1
  secret=$2
  retry "$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_SETUP_BOOTSTRAP" --command-config "$client" \
    --alter --entity-type users --entity-name "$name" --add-config "SCRAM-SHA-512=[password=${secret}]"
}

allow() {  # allow USER OPERATION RESOURCE-OPTIONS...
  principal=$1
  operation=$2
  shift 2
  retry "$bin/kafka-acls.sh" --bootstrap-server "$KAFKA_SETUP_BOOTSTRAP" --command-config "$client" \
    --add --allow-principal "User:$principal" --operation "$operation" "$@"
}

# Input topics take records small enough to be dead-lettered with their context headers (README: derived limits).
topic "$KAFKA_TOPIC_IMAGES" --config "max.message.bytes=$KAFKA_INPUT_TOPIC_MAX_MESSAGE_BYTES"
topic "$KAFKA_TOPIC_PREDICTIONS" --config "max.message.bytes=$KAFKA_INPUT_TOPIC_MAX_MESSAGE_BYTES"
topic "$KAFKA_TOPIC_IMAGES_DLQ"
topic "$KAFKA_TOPIC_PREDICTIONS_DLQ"

if [ -n "${KAFKA_ADMIN_PASSWORD:-}" ]; then
  # Each role may do its part and nothing else (StandardAuthorizer denies what no ACL allows).
  user "$KAFKA_BRIDGE_USER" "$KAFKA_BRIDGE_PASSWORD"
  allow "$KAFKA_BRIDGE_USER" Read --topic "$KAFKA_TOPIC_IMAGES" --group "$KAFKA_GROUP_BRIDGE"
  allow "$KAFKA_BRIDGE_USER" Write --topic "$KAFKA_TOPIC_PREDICTIONS" --topic "$KAFKA_TOPIC_IMAGES_DLQ"

  user "$KAFKA_CONSUMER_USER" "$KAFKA_CONSUMER_PASSWORD"
  allow "$KAFKA_CONSUMER_USER" Read --topic "$KAFKA_TOPIC_PREDICTIONS" --group "$KAFKA_GROUP_CONSUMER"
  allow "$KAFKA_CONSUMER_USER" Write --topic "$KAFKA_TOPIC_PREDICTIONS_DLQ"

  # A camera sends images and reads the results (assigned partitions, no consumer group).
  user "$KAFKA_PRODUCER_USER" "$KAFKA_PRODUCER_PASSWORD"
  allow "$KAFKA_PRODUCER_USER" Write --topic "$KAFKA_TOPIC_IMAGES"
  allow "$KAFKA_PRODUCER_USER" Read --topic "$KAFKA_TOPIC_PREDICTIONS"

  # KEDA reads the bridge's lag: the group's offsets and the topic's end offsets.
  user "$KAFKA_KEDA_USER" "$KAFKA_KEDA_PASSWORD"
  allow "$KAFKA_KEDA_USER" Describe --topic "$KAFKA_TOPIC_IMAGES" --group "$KAFKA_GROUP_BRIDGE"
fi

touch "$KAFKA_SETUP_DONE"
echo "kafka-setup: topics${KAFKA_ADMIN_PASSWORD:+, users and ACLs} in place"
# Idle until the pod stops.
while :; do
  sleep 3600 &
  wait $!
done
