/**
 * The object identifiers tlsrpc's X.509 code writes and looks for, kept below the modules that
 * issue certificates ({@linkcode ./_x509.ts}), read them ({@linkcode ./_x509_read.ts},
 * {@linkcode ./_x509_names.ts}) and read client identities ({@linkcode ./_x509_identity.ts}).
 * Private to tlsrpc.
 *
 * @module
 */

/** Object identifiers by name, in dotted form. */
export const OID = {
  commonName: "2.5.4.3",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;
