#!/bin/bash
# The Kafka TLS material of k8s/overlays/local-prod, made once in DIRECTORY the way k8s/README.md says (one CA,
# one certificate for the three brokers from k8s/overlays/prod/kafka-certificate.cnf, PKCS12 key and trust
# stores under a random password), then printed as JSON for the inventory: tls_password, ca_pem, and the two
# stores base64-encoded. A throwaway CA for a throwaway cluster; a real one keeps these in a vault.
#   k8s/overlays/local-prod/kafka-tls.sh REPOSITORY DIRECTORY   (ansible/inventories/local-cluster-prod runs it)
set -euo pipefail
repository=$(realpath "$1")
directory=$2
certificate_config=$repository/k8s/overlays/prod/kafka-certificate.cnf
mkdir -p "$directory"
cd "$directory"
# truststore.p12 is made last: without it, a half-made set is made again from scratch.
if [ ! -s truststore.p12 ]; then
  umask 077
  rm -f ./*.p12 ./*.key ./*.crt ./*.csr ./*.srl
  openssl rand -hex 16 >tls-password
  password=$(cat tls-password)
  openssl req -x509 -new -newkey rsa:3072 -nodes -keyout ca.key -subj /CN=iotpipe-kafka-ca -days 3650 \
    -out ca.crt 2>/dev/null
  openssl req -new -newkey rsa:3072 -nodes -keyout broker.key -config "$certificate_config" -out broker.csr \
    2>/dev/null
  openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$certificate_config" -extensions broker -out broker.crt 2>/dev/null
  openssl pkcs12 -export -inkey broker.key -in broker.crt -certfile ca.crt -passout pass:"$password" \
    -out keystore.p12
  keytool -importcert -noprompt -alias ca -file ca.crt -storetype PKCS12 -storepass "$password" \
    -keystore truststore.p12.partial >/dev/null 2>&1
  mv truststore.p12.partial truststore.p12
fi
python3 -c '
import base64, json, pathlib
read = pathlib.Path.read_bytes
print(json.dumps({
    "tls_password": pathlib.Path("tls-password").read_text().strip(),
    "ca_pem": pathlib.Path("ca.crt").read_text(),
    "keystore_p12": base64.b64encode(read(pathlib.Path("keystore.p12"))).decode(),
    "truststore_p12": base64.b64encode(read(pathlib.Path("truststore.p12"))).decode(),
}))'
