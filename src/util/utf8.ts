const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Whether bytes are well-formed UTF-8 (Payload Format Indicator 1, [MQTT-3.3.2-4] 0x99 check). */
export function isUtf8(bytes: Uint8Array): boolean {
  try {
    utf8Strict.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
