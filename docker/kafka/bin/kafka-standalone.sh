#!/bin/sh
# The image's default command: one combined broker and controller (KRaft) from /opt/kafka/config/server.properties,
# its storage formatted at first start. Kubernetes runs its own start script instead (k8s/base/kafka/start.sh).
set -eu
config=/opt/kafka/config/server.properties
/opt/kafka/bin/kafka-storage.sh format --standalone --ignore-formatted \
  --cluster-id "${KAFKA_CLUSTER_ID:-$(/opt/kafka/bin/kafka-storage.sh random-uuid)}" --config "$config"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
