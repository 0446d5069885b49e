/**
 * The identifier octets of DER (X.690) that {@linkcode ./_der.ts} writes and
 * {@linkcode ./_der_read.ts} reads, kept below both. Private to tlsrpc.
 *
 * @module
 */

/** The universal tags (identifier octets) tlsrpc writes and reads. */
export const Tag = {
  /** BOOLEAN. */
  Boolean: 0x01,
  /** INTEGER. */
  Integer: 0x02,
  /** BIT STRING. */
  BitString: 0x03,
  /** OCTET STRING. */
  OctetString: 0x04,
  /** NULL. */
  Null: 0x05,
  /** OBJECT IDENTIFIER. */
  Oid: 0x06,
  /** UTF8String. */
  Utf8String: 0x0c,
  /** PrintableString. */
  PrintableString: 0x13,
  /** TeletexString (T61String), read as Latin-1 as most software does. */
  TeletexString: 0x14,
  /** IA5String (ASCII). */
  Ia5String: 0x16,
  /** UTCTime. */
  UtcTime: 0x17,
  /** GeneralizedTime. */
  GeneralizedTime: 0x18,
  /** VisibleString (printable ASCII). */
  VisibleString: 0x1a,
  /** UniversalString (UTF-32BE). */
  UniversalString: 0x1c,
  /** BMPString (UTF-16BE). */
  BmpString: 0x1e,
  /** SEQUENCE and SEQUENCE OF (constructed). */
  Sequence: 0x30,
  /** SET and SET OF (constructed). */
  Set: 0x31,
} as const;

/** The bit of an identifier octet that marks a constructed encoding (SEQUENCE, SET, EXPLICIT). */
export const CONSTRUCTED = 0x20;
