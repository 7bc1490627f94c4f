#!/bin/sh
# kafka-run-class.sh CLASS [ARGS...]: run a class of Kafka's jars the way Apache Kafka's script of that name
# does, with the same variables: KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_LOG4J_OPTS, KAFKA_OPTS.
set -eu
home=/opt/kafka
# Word splitting of the *_OPTS variables is wanted: each holds several JVM options.
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true} \
  ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$home/config/log4j2.properties} \
  ${KAFKA_OPTS:-} -cp "$home/libs/*" "$@"
