#!/usr/bin/env bash
# Regenerates the test certificates in this folder: a CA and a leaf for localhost, 127.0.0.1 and ::1.
# rustls refuses a self-signed certificate used as both CA and leaf, hence the two.
# For tests and the demo only: the keys are public.
set -euo pipefail
cd "$(dirname "$0")"
days=10950 # 30 years, so that the tests do not start failing one day
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=tlsrpc test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out server.key.ec
openssl pkcs8 -topk8 -nocrypt -in server.key.ec -out server.key && rm server.key.ec
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
cat > server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
  -extfile server.ext -out server.pem
rm -f server.csr server.ext ca.srl
openssl verify -CAfile ca.pem server.pem
